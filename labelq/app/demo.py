"""``labelq demo``: the whole teacher-to-student loop on one machine, on embedded defaults.

1. the tiny base model is built (or found) under the state dir;
2. synthetic sessions are generated (with reference labels, kept aside for scoring);
3. real Celery workers (teacher, student) and the trainer service (``labelq trainer run``)
   start as child processes;
4. the sessions are ingested in waves through the routing policy (:func:`wave_bounds`):
   the first wave holds the seed set, which goes to the teacher, and the start of
   the rest, which goes to students (who wait for an adapter);
5. the teacher labels the seed set: the replay teacher (the synthetic sessions'
   reference labels, offline), which the demo chooses for itself unless
   ``LABELQ_TEACHER_BACKEND=openai`` was set on purpose (then a key and a priced model);
   at ``seed_size`` labels it triggers the trainer, which curates a bucket,
   trains a LoRA adapter, evaluates it and promotes it (v1);
6. students pick v1 up and label (vLLM, or transformers), escalating doubtful
   answers to the teacher; each later wave is ingested when the students have
   drained the one before, so the teacher's sample of it is labelled while v1
   serves and each sampled session also gets a shadow label (live agreement);
7. sampled and escalated teacher labels make the second curated bucket
   (``curation_retrain_every``, scaled to the run: :func:`loop_settings`); the
   last wave waits (``DemoConfig.retrain_wait_s`` at most) until its adapter is
   decided, so a promoted v2 is hot-swapped mid-run and labels the last wave;
8. when every session is labelled or dead-lettered (the audit balances), the
   live agreement is read, the workers stop and the report is written.

Each run uses its own Redis key prefix and store folder under
``<state_dir>/runs/<id>/``, so runs never mix; the model is shared. The last
run started is named in ``<state_dir>/runs/latest.json``; ``labelq --run latest
status`` (audit, export, flower, ...) then looks at it with no variables to set
(:func:`run_settings`).
"""

from __future__ import annotations

import bisect
import contextlib
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
from labelq.agreement import read_agreement
from labelq.app.demo_plan import demo_settings, loop_settings, wave_bounds
from labelq.app.processes import start_celery_worker, start_trainer_service, stop_process_groups
from labelq.app.report import LIVE_AGREEMENT_FILE, DemoRun
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
    waves: int = 4  # ingest waves (the first holds the seed set)
    retrain_wait_s: float = 300.0  # the last wave waits at most this long for the second adapter's gate


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


COSINE_WAIT_S = 60.0  # at the end, how long the trainer's monitor gets to embed the last shadow pairs


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


# Settings the workers take from the demo's own (run_demo's, after demo_settings and loop_settings): the
# workers see no other LABELQ_ variable of the calling environment, so runs never mix.
WORKER_SETTINGS = (
    "student_wait_s", "trainer_poll_s", "curation_seed_size", "curation_retrain_every", "routing_sample_rate",
    "agreement_window_s", "teacher_backend", "teacher_rpm", "teacher_replay_latency_s", "promote_margin_exact",
    "promote_margin_cosine", "promote_floor_exact", "promote_floor_cosine", "promote_floor_within_contract",
    "trainer_epochs",
)


def worker_env(settings: Settings, model_path: str, student_backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    env.update({f"LABELQ_{name.upper()}": str(getattr(settings, name)) for name in WORKER_SETTINGS
                if getattr(settings, name) is not None})  # unset (trainer_epochs): the worker's own default
    env.update({
        "LABELQ_STATE_DIR": str(settings.state_dir),
        "LABELQ_REDIS_URL": resolve_redis_url(settings),
        "LABELQ_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "LABELQ_STORE_URL": settings.effective_store_url,
        "LABELQ_STUDENT_MODEL": model_path,
        "LABELQ_STUDENT_BACKEND": student_backend,
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
    """Teacher (2 processes) and student Celery workers and the trainer service (``labelq trainer run``, as
    compose runs it: its polling loop also runs the live-quality monitor); stopped (TERM, then KILL) on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = {"teacher": ("prefork", 2), "student": ("solo", 1)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files = []
    try:
        for queue, (pool, concurrency) in plan.items():
            out = (log_dir / f"{queue}.log").open("wb")
            files.append(out)
            procs[queue] = start_celery_worker(queue, pool=pool, concurrency=concurrency, name=f"{queue}-demo@%h",
                                               env=env, log=out)
        files.append(out := (log_dir / "trainer.log").open("wb"))
        procs["trainer"] = start_trainer_service(env=env, log=out)
        yield procs
    finally:
        stop_process_groups(procs.values(), timeout_s=30)
        for out in files:
            out.close()


def run_demo(base: Settings, config: DemoConfig, progress: Progress) -> DemoRun:
    """Run the loop; return what the report needs (see labelq/app/report.py)."""
    from labelq.synth import generate
    from trainer.monitor import embed_pending
    from trainer.tiny_model import build_tiny_model, tiny_model_dir
    from workers.teacher.preflight import check_teacher

    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = loop_settings(demo_settings(base, run_id), config.sessions)
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
    bounds = wave_bounds(config.sessions, settings.curation_seed_size, config.waves)
    wave_files = [run_dir / "waves" / f"wave-{i + 1}.jsonl" for i in range(len(bounds))]
    wave_files[0].parent.mkdir(exist_ok=True)
    with contextlib.ExitStack() as files:
        everything = files.enter_context(sessions_file.open("wb"))
        waves = [files.enter_context(path.open("wb")) for path in wave_files]
        for i, s in enumerate(generate(config.sessions, seed=config.seed)):
            references[s["session_id"]] = s["_reference"]["label"]
            line = orjson.dumps(s) + b"\n"
            everything.write(line)
            waves[bisect.bisect_right(bounds, (i, config.sessions)) - 1].write(line)
    progress("synthetic sessions", config.sessions, config.sessions, f"{sessions_file}, {len(bounds)} waves")
    clock.end("synth")

    client = connect(settings)
    store = open_store(settings)
    env = worker_env(settings, model_path, config.student_backend)
    waves_in = _Waves(settings, client, wave_files, bounds, progress, clock)
    with workers(env, run_dir / "logs") as procs:
        waves_in.ingest_next()
        finished = _watch(settings, client, store, clock, procs, config, progress, waves_in)
        if finished:
            _wait_for_cosines(settings, client, COSINE_WAIT_S)
    # What the trainer's monitor did not embed in time (busy training) gets its cosine here, as it would.
    embed_pending(settings, client, TASK)
    live = [w.to_dict() for w in read_agreement(settings, client, TASK)]
    (run_dir / LIVE_AGREEMENT_FILE).write_bytes(orjson.dumps(live))
    return DemoRun(run_id=run_id, run_dir=str(run_dir), settings=settings, model_path=model_path,
                   references=references, ingest=waves_in.total, status=gather(settings, client),
                   audit=audit(settings, client), stages=clock.marks, finished=finished,
                   elapsed_s=round(time.monotonic() - clock.started, 1), live_agreement=tuple(live))


class _Waves:
    """The run's ingest waves: which is next, and the summed ingest counts."""

    def __init__(self, settings: Settings, client: Any, files: list[Path], bounds: list[tuple[int, int]],
                 progress: Progress, clock: StageClock) -> None:
        from producer.ingest import IngestSummary

        self._settings, self._client, self._files, self._bounds = settings, client, files, bounds
        self._progress, self._clock = progress, clock
        self.total = IngestSummary()
        self.done = 0  # waves ingested
        self.last_at = 0.0  # when the last wave went in (monotonic)

    @property
    def sessions(self) -> int:
        return self._bounds[-1][1]

    @property
    def left(self) -> int:
        return len(self._files) - self.done

    def ingest_next(self) -> None:
        from producer.run import run_ingest

        wave = self.done + 1
        self._clock.start(f"wave {wave}")
        lo, hi = self._bounds[self.done]
        part = run_ingest(self._settings, [str(self._files[self.done])], task=TASK, client=self._client)
        self.total.add(part)
        self.done, self.last_at = wave, time.monotonic()
        self._progress("ingest", self.total.read, self.sessions,
                       f"wave {wave}/{len(self._files)}: sessions {lo:,}-{hi - 1:,}, {part.enqueued:,} enqueued")


def _watch(settings: Settings, client: Any, store: Any, clock: StageClock, procs: dict[str, Any],
           config: DemoConfig, progress: Progress, waves: _Waves) -> bool:
    """Follow the stages, ingest each next wave when its time comes (:func:`_wave_due`), until every wave is
    in and the audit balances with nothing in flight; False on timeout."""
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
        escalated = t.escalated_student if t else 0
        progress("teacher labels", teacher, None, f"seed {seed}, then sampled and {escalated:,} escalated")
        serving = registry.serving(TASK)
        decided = registry.versions(TASK)
        progress("curate + train", len(decided), None, _training_line(settings, store, serving, decided))
        if serving is not None and "train" not in clock.marks:
            clock.marks["train"] = {"end": round(time.monotonic() - clock.started, 2)}
            clock.start("student")
        if len(decided) >= 2 and "retrain" not in clock.marks:
            clock.marks["retrain"] = {"end": round(time.monotonic() - clock.started, 2)}
        progress("student labels", student, None, f"adapter v{serving}" if serving else "waiting for an adapter")
        queues_empty = snapshot.queues["teacher"] == snapshot.queues["student"] == 0
        if waves.left and _wave_due(waves, serving, snapshot.queues["student"], len(decided), config, progress):
            waves.ingest_next()
            continue
        balance = audit(settings, client).tasks.get(TASK) if queues_empty and not waves.left else None
        if balance and balance.in_flight == 0 and balance.gap == 0 and \
                balance.labelled + balance.dead_lettered == waves.total.enqueued:
            clock.end("student")
            clock.end("teacher")
            return True
        time.sleep(1.0)
    return False


def _wait_for_cosines(settings: Settings, client: Any, timeout_s: float) -> None:
    """Let the trainer's monitor embed the last shadow pairs before it is stopped: a batch it has taken off the
    list when it is stopped would be lost (labelq.agreement: a sample statistic, so it does not wait for it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = read_agreement(settings, client, TASK)
        if sum(r.cosine_n for r in rows) >= sum(r.n for r in rows):
            return
        time.sleep(1.0)


def _wave_due(waves: _Waves, serving: int | None, student_queue: int, decided: int, config: DemoConfig,
              progress: Progress) -> bool:
    """The next wave goes in once an adapter serves and the students have drained the last one; the final
    wave also waits for a second adapter to be decided (promoted or refused), ``retrain_wait_s`` at most."""
    if serving is None or student_queue:
        return False
    if waves.left > 1 or decided >= 2:
        return True
    waited = time.monotonic() - waves.last_at
    if waited >= config.retrain_wait_s:
        progress("ingest", waves.total.read, waves.sessions, f"no second adapter after {config.retrain_wait_s:.0f} s: "
                 "last wave goes in with v1")
        return True
    progress("ingest", waves.total.read, waves.sessions, "the last wave waits for the retrained adapter")
    return False


def _training_line(settings: Settings, store: Any, serving: int | None, decided: list[int]) -> str:
    """What the trainer is at: the newest bucket and the adapters decided so far."""
    buckets = sorted({parsed[1] for k in store.list(keyspace.curated_prefix(TASK))
                      if (parsed := keyspace.parse_bucket_file(k)) is not None})
    if not buckets:
        return f"waiting for {settings.curation_seed_size} teacher labels"
    if len(buckets) > len(decided):
        return f"bucket {len(buckets)} ({buckets[-1]}) training" + (f", v{serving} serves" if serving else "")
    return f"{len(decided)} adapter(s) decided, v{serving} serves" if serving else \
        f"{len(decided)} adapter(s) decided, none promoted"
