"""The durable state of one Batch API job, in the object store, so a killed ``labelq teach
--batch-api`` run again resumes its batches instead of paying for them twice.

A job is one input (task, teacher model, prompt version and the set of content hashes it must
label) in one run: ``batch-jobs/<task>/<input hash>/run-<N>/``. Teaching the same input again
resumes the run without ``done.json``; once a run is done, the next one starts afresh (and pays
for nothing the cache holds). Every file is written once, in this order, so the files present
say how far a part got::

    job.json                   what the job is: model, prompt version, its spend writer
    sessions.jsonl             the sessions it must label
    r0001-p0001.part.json      a part about to be submitted: its sessions' state and its reservation
    r0001-p0001.sent.json      the provider's batch id and input file, right after the batch exists
    r0001-p0001.settled.json   its outcome: spend, labelled, dead, and what goes to the next round
    done.json                  the job is finished

A part's batch carries ``metadata.labelq_part`` (:func:`part_tag`): a run killed between creating
the batch and writing ``sent.json`` finds it on the provider instead of creating it again.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from labelq import keyspace
from labelq.errors import DecodeError, ObjectNotFound
from labelq.render import render_for_task
from labelq.schemas import SessionItem, encode_jsonl, utc_now_iso
from labelq.settings import Settings
from labelq.spec import TaskSpec
from labelq.store import ObjectStore
from workers.teacher.budget import Reservation
from workers.teacher.prompt import Messages, build_messages
from workers.teacher.session import Ask, SessionLabelling, Spend

JOB_SCHEMA_VERSION: Final = 1
_PART_FILE = re.compile(r"(r\d{4}-p\d{4})\.(part|sent|settled)\.json")
_Model = TypeVar("_Model", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SavedSession(_Strict):
    """A session waiting for an answer, as a part sent it (enough to judge the answer on resume)."""

    attempts: int = 0
    repaired: bool = False
    request: list[dict[str, str]] | None = None  # kept only for a repair; the first is rebuilt from the session
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of(cls, state: SessionLabelling) -> SavedSession:
        return cls(attempts=state.attempts, repaired=state.repaired,
                   request=state.request if state.repaired else None,
                   input_tokens=state.spend.input_tokens, output_tokens=state.spend.output_tokens,
                   cost_usd=state.spend.cost_usd)

    def restore(self, spec: TaskSpec, settings: Settings, item: SessionItem) -> SessionLabelling:
        request: Messages = self.request or build_messages(spec, render_for_task(spec, settings, item.require_payload()))
        return SessionLabelling(item, spec, settings.teacher_max_attempts, Ask(request, repair=self.repaired),
                                request, Spend(self.input_tokens, self.output_tokens, self.cost_usd),
                                repaired=self.repaired, attempts=self.attempts)


class JobInfo(_Strict):
    v: Literal[1] = JOB_SCHEMA_VERSION
    task: str
    model: str
    prompt_version: str
    input_hash: str
    run: str
    writer: str  # the job's durable spend record (``labelq.budget``): one per run
    created_at: str = Field(default_factory=utc_now_iso)

    @property
    def key(self) -> str:
        """The job in Redis keys (settled markers, the lock) and in batch metadata."""
        return f"{self.input_hash}-{self.run}"


class SavedReservation(_Strict):
    id: str
    micro_usd: int
    period_id: str

    @classmethod
    def of(cls, reservation: Reservation) -> SavedReservation:
        return cls(id=reservation.id, micro_usd=reservation.micro_usd, period_id=reservation.period_id)

    def reservation(self) -> Reservation:
        return Reservation(self.id, self.micro_usd, self.period_id)


class Part(_Strict):
    name: str  # r0001-p0001
    round: int
    sessions: dict[str, SavedSession]  # content hash (the row's custom_id) -> state when sent
    reservation: SavedReservation
    created_at_s: float = Field(default_factory=time.time)


class Sent(_Strict):
    batch_id: str
    input_file_id: str


class Settled(_Strict):
    batch_id: str
    status: str  # the provider's final status: completed, expired, failed, cancelled
    spent_micro: int
    labelled: list[str]
    dead: list[str]
    retry: dict[str, SavedSession]  # sent again in the next round


@dataclass
class PartFiles:
    part: Part
    sent: Sent | None = None
    settled: Settled | None = None


def input_hash(spec: TaskSpec, model: str, hashes: Iterable[str]) -> str:
    body = orjson.dumps([spec.name, model, spec.prompt_version, sorted(set(hashes))])
    return hashlib.sha256(body).hexdigest()[:20]


def part_name(round_: int, index: int) -> str:
    return f"r{round_:04d}-p{index:04d}"


def part_tag(info: JobInfo, name: str) -> str:
    """``metadata.labelq_part`` of a part's batch on the provider."""
    return f"{info.key}/{name}"


class JobFiles:
    """The files of one job run (see the module docstring)."""

    def __init__(self, store: ObjectStore, info: JobInfo) -> None:
        self.store, self.info = store, info

    def path(self, name: str) -> str:
        return keyspace.batch_job_file(self.info.task, self.info.input_hash, self.info.run, name)

    def write(self, name: str, value: BaseModel) -> None:
        self.store.put_bytes(self.path(name), value.model_dump_json().encode())

    def read(self, name: str, model: type[_Model]) -> _Model:
        path = self.path(name)
        try:
            return model.model_validate_json(self.store.get_bytes(path))
        except ValueError as exc:
            raise DecodeError(f"unreadable batch job file {path!r}: {exc}") from exc

    def sessions(self) -> list[SessionItem]:
        data = self.store.get_bytes(self.path("sessions.jsonl"))
        return [SessionItem.model_validate_json(line) for line in data.splitlines() if line.strip()]

    def parts(self) -> dict[str, PartFiles]:
        """Every part of the run, by name, with what it got to (sent, settled)."""
        found: dict[str, dict[str, str]] = {}
        prefix = keyspace.batch_jobs_prefix(self.info.task, self.info.input_hash, self.info.run)
        for path in self.store.list(prefix):
            match = _PART_FILE.fullmatch(path[len(prefix):])
            if match:
                found.setdefault(match[1], {})[match[2]] = path
        parts: dict[str, PartFiles] = {}
        for name, kinds in sorted(found.items()):
            if "part" not in kinds:
                continue  # a sent.json without its part cannot happen: parts are written first
            files = PartFiles(self.read(f"{name}.part.json", Part))
            if "sent" in kinds:
                files.sent = self.read(f"{name}.sent.json", Sent)
            if "settled" in kinds:
                files.settled = self.read(f"{name}.settled.json", Settled)
            parts[name] = files
        return parts

    def finish(self, summary: dict[str, object]) -> None:
        self.store.put_bytes(self.path("done.json"), orjson.dumps({"finished_at": utc_now_iso(), **summary}))


def open_unfinished(store: ObjectStore, spec: TaskSpec, ihash: str) -> JobFiles | None:
    """The run of this input that was not finished (a killed ``teach``), if any."""
    runs: dict[str, set[str]] = {}
    prefix = keyspace.batch_jobs_prefix(spec.name, ihash)
    for path in store.list(prefix):
        run, _, name = path[len(prefix):].partition("/")
        runs.setdefault(run, set()).add(name)
    for run, names in sorted(runs.items(), reverse=True):
        if "job.json" in names and "done.json" not in names:
            try:
                info = JobInfo.model_validate_json(store.get_bytes(keyspace.batch_job_file(
                    spec.name, ihash, run, "job.json")))
            except (ValueError, ObjectNotFound) as exc:
                raise DecodeError(f"unreadable batch job {prefix}{run}: {exc}") from exc
            return JobFiles(store, info)
    return None


def create_job(store: ObjectStore, spec: TaskSpec, model: str, ihash: str,
               sessions: list[SessionItem]) -> JobFiles:
    """A new run of this input: ``job.json`` and ``sessions.jsonl``, before anything is sent."""
    prefix = keyspace.batch_jobs_prefix(spec.name, ihash)
    runs = {path[len(prefix):].partition("/")[0] for path in store.list(prefix)}
    number = 1 + max((int(r[4:]) for r in runs if r.startswith("run-") and r[4:].isdigit()), default=0)
    run = f"run-{number:04d}"
    info = JobInfo(task=spec.name, model=model, prompt_version=spec.prompt_version, input_hash=ihash, run=run,
                   writer=f"batch-{ihash}-{run}")
    job = JobFiles(store, info)
    store.put_bytes(job.path("sessions.jsonl"), encode_jsonl(list(sessions)))
    job.write("job.json", info)  # last: a run without job.json is an aborted start, never resumed
    return job


def split_rows(rows: list[tuple[str, bytes]], *, max_requests: int, max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Cut request rows, in order, into batch input files of at most ``max_requests`` rows and
    ``max_bytes`` bytes (a newline after each row). A row alone over ``max_bytes`` raises ValueError."""
    parts: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for custom_id, row in rows:
        need = len(row) + 1
        if need > max_bytes:
            raise ValueError(f"the request of {custom_id} is {need} bytes, over the batch file limit of {max_bytes}")
        if current and (len(current) >= max_requests or size + need > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append((custom_id, row))
        size += need
    if current:
        parts.append(current)
    return parts
