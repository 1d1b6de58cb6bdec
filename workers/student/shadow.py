"""Shadow chunks: the serving student's answers to sessions of the teacher sample, for agreement only.

A shadow chunk (``route=shadow``, sent by the producer beside each teacher-sample
chunk; see ``labelq.agreement``) is labelled like any student chunk, with the
adapter version that serves the task now, but:

* nothing is escalated and nothing is dead-lettered (the teacher's copy of
  each session is its label, or its dead letter);
* the answers are written as shadow records (``shadow/<task>/<chunk>.jsonl``),
  never as labels: no counter moves, export and audit never see them;
* a task with no adapter to serve (none promoted, a base mismatch, a copy
  that fails its hash) has nothing to compare: the chunk is dropped, never
  parked;
* each record is offered to the pairing (``labelq.agreement.offer_shadow``),
  which scores it against the teacher's label of the same session.

A chunk redelivered after its offer is skipped (a ``done`` marker of stage
``shadow``); one redelivered between its object and its offer offers again,
which at worst leaves a half that expires (a pair is scored once).
"""

from __future__ import annotations

from labelq import keyspace
from labelq.agreement import offer_shadow
from labelq.contract import check
from labelq.engines import Adapter
from labelq.logging import get_logger
from labelq.outcomes import ChunkOutcome, StudentEngine
from labelq.queue.task import Paused
from labelq.schemas import ChunkMessage, ShadowRecord, encode_jsonl
from labelq.spec import load_spec
from workers.student.labeler import StudentRuntime

log = get_logger(__name__)
RAW_LABEL_MAX_CHARS = 500  # an answer that broke the contract is kept this long, for the comparison


def shadow_adapter(runtime: StudentRuntime, task: str) -> Adapter | None:
    """The adapter serving ``task`` now, or None when there is none to serve (the chunk is dropped)."""
    try:
        return runtime.adapter_for(task)
    except Paused as pause:
        log.info("shadow_no_adapter", task=task, reason=pause.reason)
        return None


def run_shadow_chunk(runtime: StudentRuntime, chunk: ChunkMessage, adapter: Adapter | None) -> ChunkOutcome:
    """Label a shadow chunk with ``adapter``, write its shadow records, offer them to the pairing."""
    settings, client = runtime.settings, runtime.client
    if adapter is None:
        return ChunkOutcome(status="shadow_dropped")
    done = keyspace.chunk_done(settings, "shadow", chunk.chunk_id)
    if client.exists(done):
        return ChunkOutcome(status="shadow")
    spec = load_spec(chunk.task, settings.specs_dir)
    gens, engine_s = runtime.generate(spec, chunk, adapter)
    records = []
    for item, gen in zip(chunk.sessions, gens, strict=True):
        verdict = check(gen.text, spec.contract)
        records.append(ShadowRecord(
            session_id=item.session_id, content_hash=item.content_hash, task=chunk.task,
            adapter_version=adapter.version, within_contract=verdict.ok,
            label=verdict.label if verdict.ok else gen.text[:RAW_LABEL_MAX_CHARS],
            confidence=None if gen.confidence is None else round(gen.confidence, 4), chunk_id=chunk.chunk_id))
    runtime.store.put_bytes(keyspace.shadow(chunk.task, chunk.chunk_id), encode_jsonl(list(records)))
    paired = offer_shadow(settings, client, chunk.task, records)
    client.set(done, "1", ex=keyspace.CHUNK_DONE_TTL_S)
    log.info("shadow_labelled", sessions=len(records), paired=len(paired), adapter_version=adapter.version)
    return ChunkOutcome(status="shadow", shadowed=len(records),
                        student=StudentEngine(adapter_version=adapter.version, engine_s=round(engine_s, 3),
                                              backend=runtime.backend.name,
                                              student_usd=round(engine_s / 3600 * settings.student_gpu_usd_per_hour,
                                                                8)))
