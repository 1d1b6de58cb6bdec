"""The object store refusing every write for a while: an outage to wait out, never poison.

The local store's root is replaced by a plain file (root is not stopped by file modes), so every
write fails with an OSError, as a full disk, a lost mount or a permission slip would. With
``max_attempts`` 1, a single failure counted as a delivery would halve a chunk at once: the
chunks must instead wait in the queue, the status must say the teacher waits on the store, and
once the store is back every session is labelled once and none is dead-lettered.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.chaos import Fleet, record_result, tally, tally_row, wait_until
from tests.support.helpers import write_jsonl
from tests.support.teacher import REPLAY_RATE_LIFTED
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
OUTAGE_S = 20.0  # `LABELQ_CHAOS_OUTAGE_S=300 pytest ...` runs the five minutes


def test_store_unwritable_mid_run_is_waited_out(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    outage_s = float(os.environ.get("LABELQ_CHAOS_OUTAGE_S", OUTAGE_S))
    sessions = list(generate(160, seed=7301))
    settings = settings.model_copy(update={"chunk_size": 16, "curation_seed_size": 10**6, "max_attempts": 1})
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], client=redis_client)
    root = Path(settings.effective_store_url.removeprefix("file://"))
    aside = root.with_name("store-aside")
    root.rename(aside)
    root.write_bytes(b"not a directory: every write under the store fails\n")
    env = worker_env(settings, LABELQ_MAX_ATTEMPTS="1", LABELQ_CURATION_SEED_SIZE=str(10**6),
                     LABELQ_TEACHER_BACKEND="replay", LABELQ_TEACHER_REPLAY_LATENCY_S="0.005",
                     LABELQ_OUTAGE_BACKOFF_BASE_S="0.2", LABELQ_OUTAGE_BACKOFF_MAX_S="2", **REPLAY_RATE_LIFTED)
    expected = {content_hash(s) for s in sessions}
    started = time.monotonic()
    with Fleet(env, tmp_path) as fleet:
        fleet.start("teacher")
        wait_until(lambda: "teacher" in gather(settings, redis_client).waiting, 60, "the teacher to wait on the store")
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        during = gather(settings, redis_client)
        root.unlink()
        aside.rename(root)
        wait_until(lambda: tally(settings, expected).done, 120, "every session to be labelled")
        wait_until(lambda: not gather(settings, redis_client).waiting, 30, "the wait to clear")
        final = tally(settings, expected)
        balance = audit(settings, redis_client).tasks["session-label"]
        logs = fleet.logs()
    waiting = during.waiting["teacher"]
    assert waiting.on == "store" and waiting.kind == "outage" and waiting.detail.startswith(
        ("FileExistsError", "NotADirectoryError"))
    assert during.queues["teacher"] > 0  # the chunks waited in the queue
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    assert final.dead_lettered == 0 and final.labelled == len(sessions)
    assert b"poison_chunk" not in logs and b"chunk_failed" not in logs  # never a failed delivery
    assert logs.count(b"waiting_on_outage") >= 2
    assert balance.gap == 0 and balance.in_flight == 0
    record_result(request, scenario="object store unwritable mid-run (local store)",
                  load=f"{len(sessions)} sessions, chunks of 16, 1 teacher worker, max_attempts 1",
                  faults=f"every store write fails (an OSError) for {outage_s:.0f} s",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  **tally_row(final))
