"""The demo path on a small N: real teacher, trainer and student worker processes, then the report."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.keyspace import AdapterFile
from labelq.settings import Settings
from labelq.store import open_store
from tests.support.helpers import jsonl_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("torch")
pytest.importorskip("matplotlib")


@pytest.mark.timeout(600)
def test_demo_loop_labels_everything_and_reports(settings: Settings, redis_client: redis.Redis,
                                                 tiny_model: Path, tmp_path: Path) -> None:
    from labelq.app.demo import DemoConfig, run_demo
    from labelq.app.report import summarise, write_report

    settings = settings.model_copy(update={"student_model": str(tiny_model), "curation_seed_size": 120,
                                           "teacher_backend": "replay", "teacher_rpm": 6000})
    stages: set[str] = set()
    run = run_demo(settings, DemoConfig(sessions=400, timeout_s=480, student_backend="transformers"),
                   lambda stage, done, total, info: stages.add(stage))
    summary = summarise(run)
    assert summary["finished"] and summary["audit_ok"], summary
    assert summary["lost"] == 0 and summary["labelled"] + summary["dead_lettered"] == 400
    assert summary["labelled_teacher"] >= 120 and summary["labelled_student"] >= 200
    assert summary["adapter"]["version"] == 1
    assert summary["quality"]["within_contract"] == 1.0 and summary["quality"]["n"] == summary["labelled_student"]
    letters = jsonl_objects(run.settings, keyspace.dead_letters_prefix())
    assert len(letters) == summary["dead_lettered"] and all(d["reason"] for d in letters)
    cost = summary["cost"]
    assert cost["teacher_per_1k_usd"] > cost["student_per_1k_usd"] > 0 and 0 < cost["savings"] < 1
    assert {"base model", "synthetic sessions", "ingest", "teacher labels", "curate + train",
            "student labels"} <= stages
    paths = write_report(summary, tmp_path / "report")
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<script" not in page
    assert orjson.loads(paths["json"].read_bytes())["labelled"] == summary["labelled"]
    # every session of the input has its latest label in the store, exactly once per source it went to
    store = open_store(run.settings)
    student_ids = [r["session_id"] for r in jsonl_objects(run.settings, keyspace.labels_prefix("student"))]
    assert len(student_ids) == len(set(student_ids)) == summary["labelled_student"]
    assert store.exists(keyspace.adapter_file("session-label", 1, AdapterFile.METRICS))
    # Afterwards `--run latest` looks at this run with nothing else set: its key prefix and store.
    from tests.support.cli import labelq

    status = labelq(["--run", "latest", "status", "--json"], settings)
    assert status.returncode == 0, status.stderr
    task = orjson.loads(status.stdout.splitlines()[-1])["tasks"]["session-label"]
    assert (task["labelled_teacher"], task["labelled_student"]) == (summary["labelled_teacher"],
                                                                    summary["labelled_student"])
    audited = labelq(["--run", run.run_id, "audit", "--json"], settings)
    assert audited.returncode == 0 and orjson.loads(audited.stdout.splitlines()[-1])["ok"] is True
    missing = labelq(["--run", "19990101-000000", "status"], settings)
    assert missing.returncode == 2 and b"no demo run" in missing.stderr

