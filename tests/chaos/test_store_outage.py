"""The object store refusing every write for a while: an outage to wait out, never poison.

The local store's root is replaced by a plain file (root is not stopped by file modes), so every
write fails with an OSError, as a full disk, a lost mount or a permission slip would. With
``max_attempts`` 1, a single failure counted as a delivery would halve a chunk at once: the
chunks must instead wait in the queue, the status must say the teacher waits on the store, and
once the store is back every session is labelled once and none is dead-lettered.
"""

from __future__ import annotations

import contextlib
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
from tests.support.s3_faults import S3FaultProxy
from tests.support.teacher import REPLAY_RATE_LIFTED
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
OUTAGE_S = 20.0  # `LABELQ_CHAOS_OUTAGE_S=300 pytest ...` runs the five minutes


class LocalStoreOutage:
    """The local store's root replaced by a plain file: every write fails with an OSError."""

    name = "local store"
    fault = "every store write fails (an OSError)"
    detail = ("FileExistsError", "NotADirectoryError")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._root = Path(settings.effective_store_url.removeprefix("file://"))
        self._aside = self._root.with_name("store-aside")

    def begin(self) -> None:
        self._root.rename(self._aside)
        self._root.write_bytes(b"not a directory: every write under the store fails\n")

    def end(self) -> None:
        self._root.unlink()
        self._aside.rename(self._root)


class S3Outage:
    """The S3-protocol server (moto, behind a fault proxy) answering every request with a 500."""

    name = "S3 via moto"
    fault = "every S3 request answered 500 InternalError"
    detail = ("ServiceUnavailable: S3 error InternalError",)

    def __init__(self, settings: Settings, proxy: S3FaultProxy, bucket: str) -> None:
        self.settings = settings.model_copy(update={"store_url": f"s3://{bucket}/run", "s3_endpoint_url": proxy.url})
        self._proxy = proxy

    def begin(self) -> None:
        self._proxy.failing = True

    def end(self) -> None:
        self._proxy.failing = False


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_store_unwritable_mid_run_is_waited_out(
        kind: str, settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    settings = settings.model_copy(update={"chunk_size": 16, "curation_seed_size": 10**6, "max_attempts": 1})
    with contextlib.ExitStack() as stack:
        if kind == "local":
            fault: LocalStoreOutage | S3Outage = LocalStoreOutage(settings)
        else:
            proxy = stack.enter_context(S3FaultProxy(request.getfixturevalue("s3_endpoint")))
            fault = S3Outage(settings, proxy, request.getfixturevalue("s3_bucket"))
        _run_through_an_outage(fault, redis_client, tmp_path, request)


def _run_through_an_outage(fault: LocalStoreOutage | S3Outage, redis_client: redis.Redis, tmp_path: Path,
                           request: pytest.FixtureRequest) -> None:
    settings = fault.settings
    outage_s = float(os.environ.get("LABELQ_CHAOS_OUTAGE_S", OUTAGE_S))
    sessions = list(generate(640, seed=7301))
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], client=redis_client)
    env = worker_env(settings, LABELQ_MAX_ATTEMPTS="1", LABELQ_CURATION_SEED_SIZE=str(10**6),
                     LABELQ_TEACHER_BACKEND="replay", LABELQ_TEACHER_REPLAY_LATENCY_S="0.2",
                     LABELQ_OUTAGE_BACKOFF_BASE_S="0.2", LABELQ_OUTAGE_BACKOFF_MAX_S="2", **REPLAY_RATE_LIFTED)
    if settings.s3_endpoint_url:
        env["LABELQ_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    expected = {content_hash(s) for s in sessions}
    started = time.monotonic()
    with Fleet(env, tmp_path) as fleet:
        fleet.start("teacher")
        # The fault comes mid-run: the worker has opened the store and committed a chunk already.
        wait_until(lambda: tally(settings, expected).labelled >= 16, 90, "a first chunk to be labelled")
        fault.begin()
        wait_until(lambda: "teacher" in gather(settings, redis_client).waiting, 90, "the teacher to wait on the store")
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        during = gather(settings, redis_client)
        fault.end()
        wait_until(lambda: tally(settings, expected).done, 120, "every session to be labelled")
        wait_until(lambda: not gather(settings, redis_client).waiting, 30, "the wait to clear")
        final = tally(settings, expected)
        balance = audit(settings, redis_client).tasks["session-label"]
        logs = fleet.logs()
    waiting = during.waiting["teacher"]
    assert waiting.on == "store" and waiting.kind == "outage" and waiting.detail.startswith(fault.detail)
    assert during.queues["teacher"] > 0  # the chunks waited in the queue
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    assert final.dead_lettered == 0 and final.labelled == len(sessions)
    assert b"poison_chunk" not in logs and b"chunk_failed" not in logs  # never a failed delivery
    assert logs.count(b"waiting_on_outage") >= 2
    assert balance.gap == 0 and balance.in_flight == 0
    record_result(request, scenario=f"object store unwritable mid-run ({fault.name})",
                  load=f"{len(sessions)} sessions, chunks of 16, 1 teacher worker, max_attempts 1; the fault "
                       "after the first chunk",
                  faults=f"{fault.fault} for {outage_s:.0f} s",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  **tally_row(final))
