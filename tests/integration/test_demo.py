"""The demo path on a small N: real teacher, trainer and student worker processes, then the report."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

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

    # A small run whose loop still turns: a 10% teacher sample, a retrain every 8 new teacher labels, and a
    # margin that lets a second adapter as good as the first (within noise on ~20 val rows) be promoted.
    settings = settings.model_copy(update={"student_model": str(tiny_model), "curation_seed_size": 120,
                                           "teacher_backend": "replay", "teacher_rpm": 6000,
                                           "routing_sample_rate": 0.1, "curation_retrain_every": 8,
                                           "promote_margin_exact": 0.2, "promote_margin_cosine": 0.1})
    stages: set[str] = set()
    run = run_demo(settings, DemoConfig(sessions=400, timeout_s=540, student_backend="transformers",
                                        retrain_wait_s=240), lambda stage, done, total, info: stages.add(stage))
    summary = summarise(run)
    assert summary["finished"] and summary["audit_ok"], summary
    assert summary["lost"] == 0 and summary["labelled"] + summary["dead_lettered"] == 400
    assert summary["labelled_teacher"] >= 120 and summary["labelled_student"] >= 200
    # The loop turned: a second bucket from sampled and escalated labels, v2 promoted and hot-swapped mid-run,
    # student labels from both versions, live shadow agreement counted while an adapter served.
    store = open_store(run.settings)
    v2 = orjson.loads(store.get_bytes(keyspace.adapter_file("session-label", 2, AdapterFile.METRICS)))
    assert v2["promoted"] is True, v2["gate"]
    assert v2["dataset_version"] != orjson.loads(store.get_bytes(keyspace.adapter_file(
        "session-label", 1, AdapterFile.METRICS)))["dataset_version"]
    student_labels = jsonl_objects(run.settings, keyspace.labels_prefix("student"))
    assert {1, 2} <= {r["adapter_version"] for r in student_labels}
    assert summary["adapter"]["version"] >= 2 and [w for w in run.stages if w.startswith("wave ")] == [
        "wave 1", "wave 2", "wave 3", "wave 4"]
    live = orjson.loads((Path(run.run_dir) / "live-agreement.json").read_bytes())
    assert live == list(run.live_agreement) and sum(w["n"] for w in live) > 0
    assert sum(w["cosine_n"] for w in live) == sum(w["n"] for w in live)  # every pair embedded by the end
    assert {w["version"] for w in live} <= {r["adapter_version"] for r in student_labels}
    assert summary["quality"]["within_contract"] == 1.0 and summary["quality"]["n"] == summary["labelled_student"]
    letters = jsonl_objects(run.settings, keyspace.dead_letters_prefix())
    assert len(letters) == summary["dead_lettered"] and all(d["reason"] for d in letters)
    cost = summary["cost"]
    assert cost["teacher_per_1k_usd"] > cost["student_per_1k_usd"] > 0 and 0 < cost["savings"] < 1
    assert {"base model", "synthetic sessions", "ingest", "teacher labels", "curate + train",
            "student labels"} <= stages
    assert cost["teacher_only_usd"] > cost["actual_usd"] > 0 and "LABELQ_STUDENT_GPU_USD_PER_HOUR" in cost["assumption"]
    _check_report_sections(summary)
    paths = write_report(summary, Path(run.run_dir) / "report")
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<script" not in page
    assert not re.search(r"<td[^>]*>[^<]*(\{'|\[')", page), "a dict or list repr in a table cell"
    assert all(html.escape(row["session_id"]) in page for row in summary["samples"])
    assert orjson.loads(paths["json"].read_bytes())["labelled"] == summary["labelled"]
    # every session of the input has its latest label in the store, exactly once per source it went to
    student_ids = [r["session_id"] for r in student_labels]
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
    # `labelq report` renders the latest run's report again from its store: the same derived sections.
    rendered = labelq(["report", "--json"], settings)
    assert rendered.returncode == 0, rendered.stderr
    again = orjson.loads(rendered.stdout.splitlines()[-1])
    windows = [[(r["version"], r["window_start"], r["n"], r["exact"]) for r in s["agreement"]["rows"]]
               for s in (again, summary)]
    assert again["samples"] == summary["samples"] and windows[0] == windows[1]
    assert again["labelled"] == summary["labelled"]


def _check_report_sections(summary: dict[str, Any]) -> None:
    """The sample, label lengths, agreement and throughput over time add up to the run's labels."""
    samples = summary["samples"]
    assert len(samples) == 10 and {"student", "teacher"} <= {s["labelled_by"] for s in samples}
    for sample in samples:
        assert sample["session"] and sample["reference_label"] and "_reference" not in sample["session"]
        if sample["labelled_by"] == "student":
            assert sample["student_label"] and 0 <= sample["confidence"] <= 1 and sample["adapter_version"] >= 1
        else:
            assert sample["teacher_label"] == sample["reference_label"]  # the replay teacher answers the reference
    lengths = {s["series"]: s for s in summary["label_lengths"]["series"]}
    base, adapters = lengths["base model, zero-shot"], [v for k, v in lengths.items() if k.startswith("adapter v")]
    assert base["n"] == sum(base["histogram"].values()) > 0
    assert all(base["mean_words"] > adapter["mean_words"] for adapter in adapters)
    assert sum(a["n"] for a in adapters) == summary["labelled_student"] == sum(
        sum(a["histogram"].values()) for a in adapters)
    rows = summary["agreement"]["rows"]
    assert {1, 2} <= {r["version"] for r in rows} and sum(r["n"] for r in rows) == summary["labelled_student"]
    assert all(0 <= r["exact"] <= 1 and r["window_start_s"] >= 0 for r in rows)
    throughput = summary["throughput_over_time"]["rows"]
    for stage in ("teacher", "student"):
        assert sum(r["labels"] for r in throughput if r["stage"] == stage) == summary[f"labelled_{stage}"]

