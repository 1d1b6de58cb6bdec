"""Operations: a worker's Prometheus endpoint (prefork, multiprocess) and Flower behind basic auth."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from labelq import keyspace
from labelq.keyspace import Stat
from labelq.redis_server import free_port
from labelq.settings import Settings
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import write_jsonl
from tests.support.teacher import REPLAY_RATE_LIFTED
from tests.support.worker_procs import ROOT, celery_workers, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def fetch(url: str, auth: str | None = None, timeout_s: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        request = urllib.request.Request(url)
        if auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_teacher_worker_serves_prometheus_metrics_without_session_content(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    sessions = list(generate(96, seed=301))
    settings = settings.model_copy(update={"chunk_size": 16})
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], client=redis_client, queue="teacher")
    port = free_port()
    env = worker_env(settings, LABELQ_TEACHER_BACKEND="replay", LABELQ_TEACHER_REPLAY_LATENCY_S="0.001",
                     **REPLAY_RATE_LIFTED,
                     LABELQ_METRICS_PORT=str(port), LABELQ_METRICS_HOST="127.0.0.1")
    with celery_workers(env, "teacher", 1, tmp_path, pool="prefork", concurrency=2):
        deadline = time.monotonic() + 60
        while int(redis_client.hget(keyspace.stats(settings, "session-label"), Stat.LABELLED_TEACHER) or 0) < 96:
            assert time.monotonic() < deadline, "teacher did not finish"
            time.sleep(0.2)
        status, text = fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
             if line and not line.startswith("#")}
    assert 'labelq_labels_total{stage="teacher",task="session-label"}' in lines, text
    assert lines['labelq_labels_total{stage="teacher",task="session-label"}'] == 96  # both children summed
    assert lines['labelq_batch_sessions_count{stage="teacher"}'] == 6
    assert lines['labelq_queue_depth{queue="teacher"}'] == 0
    assert lines["labelq_redis_memory_bytes"] > 0 and lines["labelq_redis_maxmemory_bytes"] == 0  # the tests' Redis
    assert lines['labelq_teacher_usd_total{model="replay",task="session-label"}'] > 0
    assert any(k.startswith("labelq_chunk_seconds_bucket") for k in lines)
    for s in sessions[:20]:  # ids and content never become label values
        assert s["session_id"] not in text and s["site"] not in text


def test_flower_refuses_to_start_open_and_requires_basic_auth(settings: Settings, tmp_path: Path) -> None:
    pytest.importorskip("flower")
    env = worker_env(settings)
    cmd = [sys.executable, "-m", "labelq.app.cli.main", "flower"]
    refused = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert refused.returncode == 2 and b"LABELQ_FLOWER_BASIC_AUTH" in refused.stderr
    port = free_port()
    env["LABELQ_FLOWER_BASIC_AUTH"] = "ops:s3cret-pass"
    proc = subprocess.Popen([*cmd, "--port", str(port), "--address", "127.0.0.1"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        status, _ = fetch(f"http://127.0.0.1:{port}/", timeout_s=60)
        assert status == 401
        assert fetch(f"http://127.0.0.1:{port}/api/workers")[0] == 401
        assert fetch(f"http://127.0.0.1:{port}/", auth="ops:wrong")[0] == 401
        assert fetch(f"http://127.0.0.1:{port}/", auth="ops:s3cret-pass")[0] == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert b"s3cret-pass" not in output


def test_status_table_keeps_every_header_and_count_whole_at_80_columns(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from labelq.app.cli.status import _render_status
    from labelq.status import gather

    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", list(generate(1234, seed=9))))],
               queue="student", client=redis_client)
    out = io.StringIO()
    _render_status(gather(settings, redis_client), Console(width=80, file=out, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing cut: headers wrap at spaces instead
    for word in ("ingested", "duplicates", "teacher", "student", "labels", "dead", "letters", "session-label",
                 "1,234", "cache hits", "budget $"):
        assert word in text, word
