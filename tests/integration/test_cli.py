"""The `labelq` CLI as a user runs it: subprocesses, real Redis, exit codes, --json last lines."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from labelq import keyspace
from labelq.keyspace import AdapterFile
from labelq.settings import Settings
from tests.support.cli import labelq
from trainer.gate import GateCheck

pytestmark = pytest.mark.integration

COMMANDS = [[], ["ingest"], ["synth"], ["status"], ["worker"], ["config"], ["config", "show"],
            ["redis"], ["redis", "start"], ["redis", "stop"], ["redis", "ping"], ["teach"],
            ["model"], ["model", "tiny"], ["adapter"], ["adapter", "list"], ["adapter", "promote"],
            ["adapter", "rollback"], ["adapter", "pin"], ["curate"], ["trainer"], ["trainer", "run"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "root")
def test_every_command_has_help(args: list[str]) -> None:
    result = labelq([*args, "--help"])
    assert result.returncode == 0, result.stderr
    assert b"Usage:" in result.stdout


def test_synth_ingest_stdin_status_json(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    assert labelq(["synth", "-n", "300", "--seed", "9", "-o", str(out)], settings).returncode == 0
    data = out.read_bytes() + b"not json\n"
    result = labelq(["ingest", "-", "--json"], settings, stdin=data)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["read"] == 301 and summary["enqueued"] == 300
    assert summary["duplicates"] == 0 and summary["rejected"] == {"invalid_json": 1}
    status = labelq(["status", "--json"], settings)
    snapshot = orjson.loads(status.stdout.strip().splitlines()[-1])
    assert snapshot["queues"]["teacher"] == summary["chunks"]
    assert snapshot["dead_letter"] == {"invalid_json": 1}
    assert snapshot["tasks"]["session-label"]["ingested"] == 300


def test_ingest_refuses_an_unknown_task_before_reading_input(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "s.jsonl"
    source.write_bytes(b'{"session_id": "a", "events": []}\n')
    result = labelq(["ingest", str(source), "--task", "sesion-label", "--json"], settings)
    assert result.returncode == 2, result.stderr
    assert b"no task spec 'sesion-label'" in result.stderr and b"session-label" in result.stderr
    assert b"Traceback" not in result.stderr
    status = orjson.loads(labelq(["status", "--json"], settings).stdout.strip().splitlines()[-1])
    assert status["queues"]["teacher"] == 0 and status["queues"]["student"] == 0
    assert status["dead_letter"] == {} and status["tasks"] == {}


def test_operational_failure_is_a_clear_nonzero_exit(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"session_id": "a"}\n')
    result = labelq(["ingest", str(tmp_path / "in.jsonl")],
                    env={"LABELQ_REDIS_URL": "redis://:topsecretpw@127.0.0.1:1/0",
                         "LABELQ_STATE_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert b"Redis unreachable" in result.stderr
    assert b"Traceback" not in result.stderr and b"topsecretpw" not in result.stderr
    missing = labelq(["ingest", str(tmp_path / "nope.jsonl")], env={"LABELQ_STATE_DIR": str(tmp_path),
                     "LABELQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert missing.returncode != 0 and b"Traceback" not in missing.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[queue]\nhigh_water_chunks = 9\n')
    result = labelq(["--config", str(conf), "config", "show", "--json"],
                    env={"LABELQ_REDIS_URL": "redis://:hunter2hunter2@h:6379/0"})
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert shown["queue_high_water_chunks"] == 9
    assert b"hunter2hunter2" not in result.stdout
    bad = labelq(["config", "show"], env={"LABELQ_CHUNK_SIZE": "-1"})
    assert bad.returncode == 2 and b"chunk_size" in bad.stderr


def test_embedded_redis_commands(tmp_path: Path) -> None:
    env = {"LABELQ_STATE_DIR": str(tmp_path / "state")}
    try:
        assert labelq(["redis", "ping"], env=env).stdout.strip() == b"PONG"
        (tmp_path / "in.jsonl").write_bytes(b'{"session_id": "a"}\n')
        assert labelq(["ingest", str(tmp_path / "in.jsonl")], env=env).returncode == 0
        status = orjson.loads(labelq(["status", "--json"], env=env).stdout.splitlines()[-1])
        assert status["totals"]["ingested"] == 1
        memory = status["redis_memory"]  # the embedded Redis has a ceiling (LABELQ_REDIS_MAXMEMORY_MB)
        assert memory["max_bytes"] == 2048 << 20 and 0 < memory["used_bytes"] < memory["max_bytes"]
        assert memory["reserve_bytes"] == int(0.02 * memory["max_bytes"])  # held by the producer
        table = labelq(["status"], env=env).stdout.decode()
        assert "redis memory:" in table and "of 2,048 MiB" in table and "producers pause above 80%" in table
    finally:
        assert b"stopped" in labelq(["redis", "stop"], env=env).stdout


def test_adapter_and_curate_commands(settings: Settings) -> None:
    from labelq.store import open_store

    store = open_store(settings)
    for v in (1, 2):
        store.put_bytes(keyspace.adapter_file("session-label", v, AdapterFile.METRICS),
                        orjson.dumps({"adapter": {"exact_match": 0.5 + v / 10}}))
    assert labelq(["adapter", "promote", "session-label", "1"], settings).returncode == 0
    assert labelq(["adapter", "promote", "session-label", "2"], settings).returncode == 0
    assert labelq(["adapter", "pin", "session-label", "1"], settings).stdout.strip().endswith(b"v1")
    listing = orjson.loads(labelq(["adapter", "list", "session-label", "--json"], settings).stdout.splitlines()[-1])
    assert listing["serving"] == 1 and listing["current"] == 2 and len(listing["versions"]) == 2
    # A version with the gate's checks and a calibration: promoted/refused and why, within 80 columns.
    checks = [GateCheck("floor_exact_match", False, 0.25, ">=", 0.3),
              GateCheck("golden", False, 0.5, ">=", 0.9, "6/12 cases; failed: refund-chat: 'Buys a gift card' "
                        "does not mention 'refund'; many-pages-buy: 'Buys a gift card' does not mention 'yoga mat'"),
              GateCheck("serving", True, note="no adapter serves yet")]
    store.put_bytes(keyspace.adapter_file("session-label", 3, AdapterFile.METRICS), orjson.dumps({
        "adapter": {"exact_match": 0.25}, "promoted": False, "gate": "refused: ...",
        "checks": [c.to_dict() for c in checks],
        "calibration": {"calibrated": True, "threshold": 0.4213, "why": "lowest threshold whose answers reach "
                        "precision 0.900: 0.950 on 97.0% of val answers"}}))
    text = labelq(["adapter", "list", "session-label"], settings).stdout.decode()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "v3 refused" in text and "FAIL floor_exact_match 0.250 < 0.300" in text
    assert "FAIL golden 0.500 < 0.900 (6/12 cases" in text and "ok   serving: skipped (no adapter serves yet)" in text
    assert "confidence threshold 0.4213: lowest threshold" in text and "0.4213" in text
    assert labelq(["adapter", "pin", "session-label"], settings).returncode == 2
    assert labelq(["adapter", "pin", "session-label", "--clear"], settings).returncode == 0
    assert b"v1" in labelq(["adapter", "rollback", "session-label"], settings).stdout
    missing = labelq(["adapter", "promote", "session-label", "7"], settings)
    assert missing.returncode == 2 and b"no adapter v7" in missing.stderr
    nothing = labelq(["curate", "session-label"], settings)
    assert nothing.returncode == 1 and b"nothing to curate" in nothing.stderr
