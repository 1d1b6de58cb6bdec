"""Secrets never leave: API keys, S3 credentials and the Redis password are searched for in every
log, CLI output, status, record, dead letter, export, report, Redis value and error message of a
run; Flower refuses unauthenticated access."""

from __future__ import annotations

import base64
import secrets
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

from labelq.app.report import DemoRun, summarise, write_report
from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.redis_server import free_port
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
