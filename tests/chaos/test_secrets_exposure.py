"""Secrets never leave: API keys, S3 credentials and the Redis password are searched for in every
log, CLI output, status, record, dead letter, export, report, Redis value and error message of a
run; Flower, the workers' metrics and Redis refuse unauthenticated access; the embedded Redis's
files are its owner's only."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import boto3
import orjson
import pytest
import redis
from pydantic import SecretStr

from labelq import keyspace
from labelq.app.report import DemoRun, summarise, write_report
from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.metrics import QueueDepthCollector
from labelq.redis_server import EmbeddedRedis, find_redis_server, free_port
from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from producer.ingest import IngestSummary
from tests.support.chaos import ROOT, Fleet, fake_adapter, record_result, tally, wait_until
from tests.support.helpers import write_jsonl
from tests.support.openai_server import FakeConfig, FakeOpenAI
from tests.support.redis_process import RedisProcess
from tests.support.student import publish_adapter
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
CLI = [sys.executable, "-m", "labelq.app.cli.main"]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True, timeout=120)


def cli_output(env: dict[str, str], *args: str) -> bytes:
    """Everything a command printed, whatever its exit status."""
    done = run_cli(env, *args)
    return done.stdout + done.stderr


def redis_dump(client: redis.Redis) -> bytes:
    """Every key and value in this Redis, as bytes to search."""
    out = []
    for k in client.scan_iter(count=1000):
        kind = client.type(k)
        out.append(k)
        if kind == b"string":
            out.append(client.get(k) or b"")
        elif kind == b"hash":
            out.extend(b for kv in client.hgetall(k).items() for b in kv)  # type: ignore[union-attr]
        elif kind == b"list":
            out.extend(client.lrange(k, 0, -1))  # type: ignore[arg-type]
        elif kind in (b"set", b"zset"):
            out.extend(client.smembers(k) if kind == b"set" else client.zrange(k, 0, -1))  # type: ignore[arg-type]
    return b"\n".join(out)


def fetch(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_secrets_never_appear_in_any_output(settings: Settings, s3_endpoint: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    secret = {
        "teacher_key": f"sk-chaos-{secrets.token_hex(16)}", "student_key": f"sk-student-{secrets.token_hex(16)}",
        "aws_key_id": f"AKIA{secrets.token_hex(8).upper()}", "aws_secret": secrets.token_urlsafe(30),
        "redis_password": f"rp{secrets.token_hex(12)}", "wrong_redis_password": f"wrong{secrets.token_hex(12)}",
    }
    server = RedisProcess(tmp_path / "redis", password=secret["redis_password"])
    server.start()
    request.addfinalizer(server.stop)  # also when the test fails before its own cleanup
    client = redis.Redis.from_url(server.url)
    bucket = f"lq-secrets-{secrets.token_hex(4)}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=secret["aws_key_id"], aws_secret_access_key=secret["aws_secret"])
    s3.create_bucket(Bucket=bucket)
    sessions = list(generate(120, seed=7501))
    settings = settings.model_copy(update={"redis_url": SecretStr(server.url), "store_url": f"s3://{bucket}/run",
                                           "s3_endpoint_url": s3_endpoint, "chunk_size": 20,
                                           "curation_seed_size": 40})
    outputs: dict[str, bytes] = {}
    try:
        with FakeOpenAI() as fake:
            env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                             OPENAI_API_KEY=secret["teacher_key"], LABELQ_STUDENT_BACKEND="openai",
                             LABELQ_STUDENT_BASE_URL=fake.base_url, LABELQ_STUDENT_API_KEY=secret["student_key"],
                             LABELQ_STUDENT_MODEL="served-base", LABELQ_S3_ENDPOINT_URL=s3_endpoint,
                             LABELQ_CURATION_SEED_SIZE="40", LABELQ_CHUNK_SIZE="20", LABELQ_LOG_LEVEL="DEBUG",
                             AWS_ACCESS_KEY_ID=secret["aws_key_id"], AWS_SECRET_ACCESS_KEY=secret["aws_secret"])
            source = write_jsonl(tmp_path / "in.jsonl", sessions, [b"not json", b'{"no": "id"}'])
            publish_adapter(settings, client, fake_adapter(tmp_path), 1)
            for name, args in {"config": ("config", "show"), "ingest": ("ingest", str(source), "--json")}.items():
                done = run_cli(env, *args)
                assert done.returncode == 0, done.stderr.decode()[-2000:]
                outputs[name] = done.stdout + done.stderr
            with Fleet(env, tmp_path) as fleet:
                fleet.start("teacher")
                fleet.start("student")
                expected = {content_hash(s) for s in sessions}
                wait_until(lambda: tally(settings, expected).done, 120, "every session to be labelled")
                logs = fleet.logs()
            for name, args in {"status": ("status",), "status_json": ("status", "--json"),
                               "audit": ("audit", "--json"), "adapters": ("adapter", "list", "session-label"),
                               "curate": ("curate", "session-label"),
                               "export": ("export", str(tmp_path / "export.jsonl"))}.items():
                done = run_cli(env, *args)
                assert done.returncode == 0, (name, done.stderr.decode()[-2000:])
                outputs[name] = done.stdout + done.stderr
            assert (tmp_path / "export.jsonl").stat().st_size > 0
            # Error paths: a provider that echoes the key it refused, a wrong Redis password, a missing bucket.
            refused = FakeOpenAI(FakeConfig(fault_rates={"401": 1.0}))
            with refused:
                teach_env = {**env, "LABELQ_TEACHER_BASE_URL": refused.base_url}
                outputs["teach_401"] = cli_output(teach_env, "teach", str(source))
                echoed = [r for r in refused.requests if r["fault"] == "401"]
            bad_redis = {**env, "LABELQ_REDIS_URL": server.url.replace(secret["redis_password"],
                                                                       secret["wrong_redis_password"])}
            outputs["status_wrong_password"] = cli_output(bad_redis, "status")
            no_bucket = {**env, "LABELQ_STORE_URL": "s3://no-such-bucket-here/x"}
            outputs["export_missing_bucket"] = cli_output(no_bucket, "export", str(tmp_path / "never.jsonl"))
        report_dir = tmp_path / "report"
        ingested = orjson.loads(next(line for line in outputs["ingest"].splitlines() if line.startswith(b'{"read"')))
        summary = summarise(DemoRun(
            run_id="secrets", run_dir=str(report_dir), settings=settings, model_path="",
            references={s["session_id"]: s["_reference"]["label"] for s in sessions},
            ingest=IngestSummary(read=ingested["read"], enqueued=ingested["enqueued"],
                                 duplicates=ingested["duplicates"], rejected=Counter(ingested["rejected"]),
                                 chunks=ingested["chunks"], elapsed_s=ingested["elapsed_s"]),
            status=gather(settings, client), audit=audit(settings, client), stages={}, finished=True, elapsed_s=1.0))
        report = b"".join(p.read_bytes() for p in write_report(summary, report_dir).values())
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]
        stored = b"\n".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
        in_redis = redis_dump(client)
    finally:
        server.stop()

    # Each path really ran (a search of empty output proves nothing).
    assert echoed and b"refused the key" in outputs["teach_401"]
    assert b"Redis" in outputs["status_wrong_password"] and b"no-such-bucket-here" in outputs["export_missing_bucket"]
    assert b'"chunk_done"' in logs and b'"teacher_request"' in logs
    assert {"labels/student", "labels/teacher", "deadletter/ingest", "curated"} <= {
        "/".join(k.split("/")[1:3]) for k in keys} | {k.split("/")[1] for k in keys}
    assert summary["labelled"] == len(sessions)
    everything = {"worker logs": logs, "store objects": stored, "store keys": "\n".join(keys).encode(), "redis": in_redis, "report": report,
                  "export": (tmp_path / "export.jsonl").read_bytes(), **outputs}
    for where, text in everything.items():
        for name, value in secret.items():
            # The whole secret, and its tail (masking may show a short head such as "sk-cha***").
            assert value.encode() not in text and value[-12:].encode() not in text, f"{name} found in {where}"
    record_result(request, scenario="secrets in every output",
                  load=f"{len(sessions)} sessions over Redis with a password and S3 (moto), {len(everything)} outputs searched",
                  faults="provider echoing a refused key (401), wrong Redis password, missing bucket",
                  lost=len(expected) - summary["labelled"], duplicates=0,
                  searched_bytes=sum(len(v) for v in everything.values()),
                  seconds=round(time.monotonic() - started, 1))


def test_flower_refuses_unauthenticated_access(settings: Settings, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    pytest.importorskip("flower")
    started = time.monotonic()
    password = secrets.token_urlsafe(16)
    port = free_port()
    env = worker_env(settings, LABELQ_FLOWER_BASIC_AUTH=f"ops:{password}")
    with (tmp_path / "flower.log").open("wb") as log:
        proc = subprocess.Popen([*CLI, "flower", "--port", str(port), "--address", "127.0.0.1"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(base), 60, "Flower to listen")
            paths = ["/", "/workers", "/tasks", "/broker", "/metrics", "/api/workers", "/api/tasks",
                     "/api/queues/length", "/api/task/types", "/tasks/datatable"]
            assert {p: fetch(base + p) for p in paths} == dict.fromkeys(paths, 401)
            assert {p: fetch(base + p, "ops:wrong") for p in paths} == dict.fromkeys(paths, 401)
            assert fetch(base + "/", f"ops:{password}") == 200
            assert fetch(base + "/metrics", f"ops:{password}") == 200
            assert fetch(base + "/healthcheck") == 200  # "OK" only, for liveness probes
            # Writes are refused too, without and with a wrong password.
            post = urllib.request.Request(base + "/api/task/async-apply/labelq.teacher.label_chunk", data=b"{}")
            try:
                code = urllib.request.urlopen(post, timeout=10).status
            except urllib.error.HTTPError as exc:
                code = exc.code
            assert code == 401
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert password.encode() not in (tmp_path / "flower.log").read_bytes()
    record_result(request, scenario="Flower without credentials", load=f"{len(paths)} pages and API routes, GET and POST",
                  faults="no credentials, a wrong password", lost=0, duplicates=0,
                  seconds=round(time.monotonic() - started, 1), refused=2 * len(paths) + 1)


def _answers(base: str) -> bool:
    try:
        return fetch(base + "/healthcheck") == 200
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.2)
        return False


def _infra_redis(tmp_path: Path, password: str) -> tuple[subprocess.Popen[bytes], int]:
    """redis-server as compose runs it: infra/redis.conf through infra/redis-start.sh, the password from
    the environment; only ``dir`` (``/data`` in the image) and the bind and port (loopback here) differ."""
    data = tmp_path / "infra-redis"
    data.mkdir()
    conf = tmp_path / "redis.conf"
    lines = (ROOT / "infra" / "redis.conf").read_text().splitlines()
    assert "dir /data" in lines
    conf.write_text("\n".join(f"dir {data}" if line == "dir /data" else line for line in lines) + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")} | {"REDIS_PASSWORD": password}
    proc = subprocess.Popen(["sh", str(ROOT / "infra" / "redis-start.sh"), find_redis_server(), str(conf),
                             "--port", str(port), "--bind", "127.0.0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _pong(redis.Redis(port=port, password=password, socket_timeout=1)), 20, "Redis to start")
    return proc, port


def _pong(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        time.sleep(0.05)
        return False


def _raw(port: int, command: bytes) -> bytes:
    """One RESP command on a fresh socket, no client library: what anything on the network could send."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(200)


def _metrics(url: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _scrapes(url: str, auth: str) -> bool:
    try:
        return _metrics(url, auth)[0] == 200
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.2)
        return False


def _metrics_connections(client: redis.Redis) -> set[str]:
    """Ids of the connections the metrics endpoint holds (its pool names them)."""
    return {c["id"] for c in client.client_list() if c["name"] == QueueDepthCollector.REDIS_CLIENT_NAME}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_metrics_and_redis_refuse_unauthenticated_access(settings: Settings, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    redis_password, metrics_password = secrets.token_hex(24), secrets.token_urlsafe(18)
    refused: Counter[str] = Counter()

    # 1. Redis with infra/redis.conf: nothing without the password, everything with it.
    proc, port = _infra_redis(tmp_path, redis_password)
    request.addfinalizer(lambda: (proc.terminate(), proc.wait(timeout=30)))
    for command in (b"PING\r\n", b"*3\r\n$3\r\nSET\r\n$6\r\nbudget\r\n$1\r\n0\r\n", b"KEYS *\r\n",
                    b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$0\r\n\r\n", b"FLUSHALL\r\n"):
        assert _raw(port, command).startswith(b"-NOAUTH"), command
        refused["redis_unauthenticated"] += 1
    for wrong in (None, "wrong-" + redis_password):  # a client library without, then with a wrong password
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password=wrong).set("budget", 0)
        refused["redis_unauthenticated" if wrong is None else "redis_wrong_password"] += 1
    client = redis.Redis(port=port, password=redis_password)
    assert client.config_get("requirepass") == {"requirepass": redis_password}
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.dbsize() == 0  # none of the refused writes landed

    # 2. A teacher worker on that Redis, its metrics behind basic auth.
    settings = settings.model_copy(update={"redis_url": SecretStr(f"redis://:{redis_password}@127.0.0.1:{port}/0")})
    metrics_port = free_port()
    env = worker_env(settings, LABELQ_TEACHER_BACKEND="replay", LABELQ_METRICS_PORT=str(metrics_port),
                     LABELQ_METRICS_HOST="127.0.0.1", LABELQ_METRICS_USER="scraper",
                     LABELQ_METRICS_PASSWORD=metrics_password)
    # Beyond loopback without a password the worker refuses to start, naming the setting.
    open_env = {**env, "LABELQ_METRICS_HOST": "0.0.0.0", "LABELQ_METRICS_PASSWORD": ""}
    done = run_cli(open_env, "worker", "teacher")
    assert done.returncode == 2 and b"LABELQ_METRICS_PASSWORD" in done.stderr, done.stderr[-2000:]
    refused["worker_open_metrics"] += 1
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    right = f"scraper:{metrics_password}"
    client.lpush(keyspace.queue(settings, "student"), *[b"x"] * 3)  # a queue no worker here consumes
    with Fleet(env, tmp_path) as fleet:
        fleet.start("teacher")
        wait_until(lambda: _scrapes(url, right), 90, "the worker's metrics endpoint")
        for auth in (None, "scraper:wrong", f"prometheus:{metrics_password}", f"scraper:{metrics_password}x",
                     metrics_password, f"scraper:{metrics_password[:-1]}"):
            status, body = _metrics(url, auth)
            assert status == 401 and b"labelq_" not in body, auth
            refused["metrics_unauthenticated" if auth is None else "metrics_wrong_credentials"] += 1

        # 3. 200 scrapes: each one reads the queue depths from Redis, none opens a new connection.
        wait_until(lambda: any(c["cmd"] == "brpop" for c in client.client_list()), 60, "the worker to consume")
        pool_before = _metrics_connections(client)
        before = int(client.info("stats")["total_connections_received"])
        depths = []
        for i in range(200):
            if i == 100:
                client.lpush(keyspace.queue(settings, "student"), b"x", b"x")
            status, body = _metrics(url, right)
            assert status == 200
            depths.append(next(float(line.split()[-1]) for line in body.splitlines()
                               if line.startswith(b'labelq_queue_depth{queue="student"}')))
        opened = int(client.info("stats")["total_connections_received"]) - before
        pool_after = _metrics_connections(client)
        logs = fleet.logs()
    assert depths[:100] == [3.0] * 100 and depths[100:] == [5.0] * 100  # read live, not cached
    # The scrapes used the pool made by the first one (at most 2 connections): not one new connection.
    assert pool_after == pool_before and 1 <= len(pool_after) <= QueueDepthCollector.MAX_REDIS_CONNECTIONS
    assert opened <= 2, f"{opened} Redis connections opened during 200 scrapes"  # the worker's own, if any
    assert metrics_password.encode() not in logs and redis_password.encode() not in logs

    # 4. The embedded Redis: its directory and every file it writes (the AOF above all) are owner-only,
    #    even when started by a process with a loose umask, and an older, looser directory is tightened.
    state = tmp_path / "embedded-state"
    (state / "redis").mkdir(parents=True, mode=0o755)
    (state / "redis").chmod(0o755)
    (state / "redis" / "old.log").write_text("from an older labelq")
    (state / "redis" / "old.log").chmod(0o644)
    embedded_env = {k: v for k, v in env.items() if k != "LABELQ_REDIS_URL"} | {"LABELQ_STATE_DIR": str(state)}
    loose = subprocess.run([*CLI, "redis", "start"], env=embedded_env, cwd=ROOT, capture_output=True,
                           timeout=120, umask=0o022)
    assert loose.returncode == 0, loose.stderr.decode()[-2000:]
    try:
        embedded = redis.Redis.from_url(EmbeddedRedis(state).url_if_running() or "")
        embedded.set("session", "content" * 1000)
        embedded.bgrewriteaof()  # new base and incr files, made after the start
        wait_until(lambda: embedded.info("persistence")["aof_rewrite_in_progress"] == 0
                   and embedded.info("persistence")["aof_rewrite_scheduled"] == 0, 30, "the AOF rewrite")
        embedded.set("after-rewrite", "more content")
        files = list((state / "redis").rglob("*"))
        aof = [p for p in files if p.parent.name == "appendonlydir"]
        assert {p.suffix for p in aof} >= {".rdb", ".aof", ".manifest"} and all(p.stat().st_size for p in aof)
        modes = {str(p.relative_to(state)): oct(_mode(p)) for p in [state / "redis", *files]}
        assert all(_mode(p) & 0o077 == 0 for p in [state / "redis", *files]), modes
        assert _mode(state / "redis") == 0o700 and _mode(state / "redis" / "appendonlydir") == 0o700
        assert all(_mode(p) == 0o600 for p in aof), modes
    finally:
        subprocess.run([*CLI, "redis", "stop"], env=embedded_env, cwd=ROOT, capture_output=True, timeout=60)
    assert EmbeddedRedis(state).url_if_running() is None
    record_result(request, scenario="metrics and Redis refusing unauthenticated access",
                  load=f"Redis from infra/redis.conf, a teacher worker's metrics, 200 scrapes, "
                       f"the embedded Redis's {len(aof)} AOF files",
                  faults="no password, wrong passwords and users, raw RESP without AUTH, "
                         "metrics on 0.0.0.0 without a password",
                  lost=0, duplicates=0, refused=sum(refused.values()), redis_connections_per_200_scrapes=opened,
                  seconds=round(time.monotonic() - started, 1), modes=modes)
