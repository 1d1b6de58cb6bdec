"""``labelq demo``: the whole teacher-to-student loop on one machine, on embedded defaults.

1. the tiny base model is built (or found) under the state dir;
2. synthetic sessions are generated (with reference labels, kept aside for scoring);
3. real Celery workers start as child processes: teacher, trainer, student;
4. the sessions are ingested through the routing policy: the seed set and a
   sample to the teacher, the rest to students (who wait for an adapter);
5. the teacher labels the seed set: the replay teacher (the synthetic sessions'
   reference labels, offline), which the demo chooses for itself unless
   ``LABELQ_TEACHER_BACKEND=openai`` was set on purpose (then a key and a priced model);
   at ``seed_size`` labels it triggers the trainer, which curates a bucket,
   trains a LoRA adapter, evaluates it and promotes it;
6. students pick the adapter up and label the rest (vLLM, or transformers);
7. when every session is labelled or dead-lettered (the audit balances), the
   workers stop and the report is written.

Each run uses its own Redis key prefix and store folder under
``<state_dir>/runs/<id>/``, so runs never mix; the model is shared. The last
run started is named in ``<state_dir>/runs/latest.json``; ``labelq --run latest
status`` (audit, export, flower, ...) then looks at it with no variables to set
(:func:`run_settings`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from labelq import keyspace
from labelq.app.processes import start_celery_worker, stop_process_groups
from labelq.app.report import DemoRun
from labelq.audit import audit
from labelq.logging import get_logger
from labelq.redis_server import connect, resolve_redis_url
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store

log = get_logger(__name__)
TASK = "session-label"


@dataclass
class DemoConfig:
    sessions: int = 5000
    seed: int = 1
    timeout_s: float = 900.0
    student_backend: str = "auto"
    out_dir: Path | None = None


@dataclass
class StageClock:
    """When each stage started and finished (monotonic seconds from the run's start)."""

    started: float = field(default_factory=time.monotonic)
    marks: dict[str, dict[str, float]] = field(default_factory=dict)

    def start(self, stage: str) -> None:
        self.marks.setdefault(stage, {})["start"] = round(time.monotonic() - self.started, 2)

    def end(self, stage: str) -> None:
        self.marks.setdefault(stage, {})["end"] = round(time.monotonic() - self.started, 2)


Progress = Callable[[str, int, int | None, str], None]  # stage, done, total, info


def demo_teacher_backend(base: Settings) -> str:
    """replay, chosen by the demo, unless LABELQ_TEACHER_BACKEND (or the config file) chose one."""
    return base.teacher_backend if "teacher_backend" in base.model_fields_set else "replay"


def demo_settings(base: Settings, run_id: str) -> Settings:
    run_dir = base.state_dir / "runs" / run_id
    return base.model_copy(update={
        "teacher_backend": demo_teacher_backend(base),
        "redis_key_prefix": f"{base.redis_key_prefix}demo-{run_id}:",
        "store_url": base.store_url or f"file://{run_dir / 'store'}",
        "trainer_poll_s": 2.0,
        "student_wait_s": 2.0,
    })


LATEST = "latest.json"
# Where `make demo` keeps its state (the Makefile's DEMO_DIR): `--run` looks there too, from the project root.
MAKE_DEMO_DIR = Path(".labelq") / "demo"


def run_settings(base: Settings, run: str) -> Settings:
    """The settings that see demo run ``run`` (``latest`` or a run id): its state dir, key prefix and store.

    Runs are looked for under the state dir, then under ``.labelq/demo`` (where ``make demo`` runs)."""
    from labelq.errors import ConfigError

    places = [base.state_dir] + ([MAKE_DEMO_DIR.resolve()] if "state_dir" not in base.model_fields_set else [])
    for state_dir in places:
        run_id = run_id_of(state_dir, run)
        if run_id is not None:
            return demo_settings(base.model_copy(update={"state_dir": state_dir}), run_id)
    where = " or ".join(str(p / "runs") for p in places)
    raise ConfigError(f"no demo run {run!r} under {where}: run `make demo` (or `labelq demo`) first, or set "
                      "LABELQ_STATE_DIR to the state dir the demo ran in")


def run_id_of(state_dir: Path, run: str) -> str | None:
    """The id of demo run ``run`` (``latest`` or an id) under ``state_dir``; None when there is no such run."""
    runs = state_dir / "runs"
    run_id = run
    if run == "latest":
        try:
            run_id = str(orjson.loads((runs / LATEST).read_bytes())["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return run_id if run_id and Path(run_id).name == run_id and (runs / run_id).is_dir() else None


def export_run_env(settings: Settings) -> None:
    """Child processes (Flower, workers started from the CLI) see the same run."""
    os.environ.update({"LABELQ_STATE_DIR": str(settings.state_dir),
                       "LABELQ_REDIS_KEY_PREFIX": settings.redis_key_prefix,
                       "LABELQ_STORE_URL": settings.effective_store_url})


def worker_env(settings: Settings, model_path: str, student_backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    env.update({
        "LABELQ_STATE_DIR": str(settings.state_dir),
        "LABELQ_REDIS_URL": resolve_redis_url(settings),
        "LABELQ_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "LABELQ_STORE_URL": settings.effective_store_url,
        "LABELQ_STUDENT_MODEL": model_path,
        "LABELQ_STUDENT_BACKEND": student_backend,
        "LABELQ_STUDENT_WAIT_S": str(settings.student_wait_s),
        "LABELQ_TRAINER_POLL_S": str(settings.trainer_poll_s),
        "LABELQ_CURATION_SEED_SIZE": str(settings.curation_seed_size),
        "LABELQ_TEACHER_BACKEND": settings.teacher_backend,
        "LABELQ_TEACHER_RPM": str(settings.teacher_rpm),
        "LABELQ_TEACHER_REPLAY_LATENCY_S": str(settings.teacher_replay_latency_s),
        "LABELQ_LOG_FORMAT": "json",
        "LABELQ_LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
        "TOKENIZERS_PARALLELISM": "false",
    })
    if settings.s3_endpoint_url:
        env["LABELQ_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


@contextmanager
def workers(env: dict[str, str], log_dir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Teacher (2 processes), trainer and student workers; stopped (TERM, then KILL) on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = {"teacher": ("prefork", 2), "trainer": ("solo", 1), "student": ("solo", 1)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files = []
    try:
        for queue, (pool, concurrency) in plan.items():
            out = (log_dir / f"{queue}.log").open("wb")
            files.append(out)
            procs[queue] = start_celery_worker(queue, pool=pool, concurrency=concurrency, name=f"{queue}-demo@%h",
                                               env=env, log=out)
        yield procs
    finally:
        stop_process_groups(procs.values(), timeout_s=30)
        for out in files:
            out.close()


def run_demo(base: Settings, config: DemoConfig, progress: Progress) -> DemoRun:
    """Run the loop; return what the report needs (see labelq/app/report.py)."""
    from labelq.synth import generate
    from producer.run import run_ingest
    from trainer.tiny_model import build_tiny_model, tiny_model_dir
    from workers.teacher.preflight import check_teacher

    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = demo_settings(base, run_id)
    check_teacher(settings)  # a real teacher chosen without a key or a price stops here, not in a worker
    run_dir = settings.state_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir.parent / LATEST).write_bytes(orjson.dumps({"run_id": run_id, "started_at": time.time()}))
    clock = StageClock()

    clock.start("base_model")
    if settings.student_model == "smollm2":
        from trainer.gguf_import import prepare_smollm2

        progress("base model", 0, 1, "converting SmolLM2-135M-Instruct from its GGUF file (once)")
        model_path = str(prepare_smollm2(settings))
        progress("base model", 1, 1, f"SmolLM2-135M-Instruct ({Path(model_path).name})")
    elif settings.student_model == "tiny":
        ready = (tiny_model_dir(settings) / "config.json").exists()
        model_path = str(build_tiny_model(settings, on_step=lambda step, total, loss: progress(
            "base model", step, total, f"pre-training, loss {loss:.3f}")))
        progress("base model", 1, 1, "ready" if ready else "built")
    else:
        model_path = settings.student_model
        progress("base model", 1, 1, f"using {model_path}")
    clock.end("base_model")

    clock.start("synth")
    sessions_file = run_dir / "sessions.jsonl"
    references: dict[str, str] = {}
    with sessions_file.open("wb") as fh:
        for s in generate(config.sessions, seed=config.seed):
            references[s["session_id"]] = s["_reference"]["label"]
            fh.write(orjson.dumps(s) + b"\n")
    progress("synthetic sessions", config.sessions, config.sessions, str(sessions_file))
    clock.end("synth")

    client = connect(settings)
    store = open_store(settings)
    env = worker_env(settings, model_path, config.student_backend)
    with workers(env, run_dir / "logs") as procs:
        clock.start("ingest")
        summary = run_ingest(settings, [str(sessions_file)], task=TASK, client=client,
                             on_record=lambda s: progress("ingest", s.read, config.sessions, "")
                             if s.read % 500 == 0 else None)
        progress("ingest", summary.read, config.sessions, f"{summary.enqueued:,} enqueued")
        clock.end("ingest")
        finished = _watch(settings, client, store, clock, procs, config, progress, summary.enqueued)
    return DemoRun(run_id=run_id, run_dir=str(run_dir), settings=settings, model_path=model_path,
                   references=references, ingest=summary, status=gather(settings, client),
                   audit=audit(settings, client), stages=clock.marks, finished=finished,
                   elapsed_s=round(time.monotonic() - clock.started, 1))


def _watch(settings: Settings, client: Any, store: Any, clock: StageClock, procs: dict[str, Any],
           config: DemoConfig, progress: Progress, enqueued: int) -> bool:
    """Follow the stages until the audit balances with nothing in flight; False on timeout."""
    from labelq.registry import Registry

    deadline = clock.started + config.timeout_s
    registry = Registry(settings, client, store)
    clock.start("teacher")
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} worker exited with {proc.returncode}; see its log")
        snapshot = gather(settings, client)
        t = snapshot.tasks.get(TASK)
        teacher, student = (t.labelled_teacher, t.labelled_student) if t else (0, 0)
        seed = min(t.routing.seeded if t else 0, settings.curation_seed_size)
        progress("teacher labels", teacher, None, f"seed {seed}, sampled and escalated sessions too")
        serving = registry.serving(TASK)
        if serving is None:
            buckets = sorted({parsed[1] for k in store.list(keyspace.curated_prefix(TASK))
                              if (parsed := keyspace.parse_bucket_file(k)) is not None})
            progress("curate + train", 0, 1, f"bucket {buckets[-1]} training" if buckets else
                     f"waiting for {settings.curation_seed_size} teacher labels")
        else:
            if "train" not in clock.marks:
                clock.marks["train"] = {"end": round(time.monotonic() - clock.started, 2)}
                clock.start("student")
            progress("curate + train", 1, 1, f"adapter v{serving} promoted")
        progress("student labels", student, None, f"adapter v{serving}" if serving else "waiting for an adapter")
        queues_empty = snapshot.queues["teacher"] == snapshot.queues["student"] == 0
        balance = audit(settings, client).tasks.get(TASK) if queues_empty else None
        if balance and balance.in_flight == 0 and balance.gap == 0 and \
                balance.labelled + balance.dead_lettered == enqueued:
            clock.end("student")
            clock.end("teacher")
            return True
        time.sleep(1.0)
    return False
