"""Object-store paths, built with :func:`~labelq.store.keys.key` and :func:`~labelq.store.keys.segment`
so a task name or chunk id from data can never leave its folder."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from labelq.store.keys import key, segment

NO_TASK = "_none"  # the task folder of dead letters that belong to no task

# Write stamps: ``YYYYMMDD/HHMMSS.ffffff`` (UTC, fixed width), so keys that start with one sort by time.
_STAMP_FORMAT = "%Y%m%d/%H%M%S.%f"
_STAMP = re.compile(r"\d{8}/\d{6}\.\d{6}")
_WRITTEN = re.compile(r"written/([^/]+)/([^/]+)/(\d{8}/\d{6}\.\d{6})-([^/]+)")


def write_stamp(at: datetime | None = None) -> str:
    """A write stamp (``YYYYMMDD/HHMMSS.ffffff``, UTC): now, or ``at``."""
    return (at or datetime.now(UTC)).astimezone(UTC).strftime(_STAMP_FORMAT)


def shift_stamp(stamp: str, seconds: float) -> str:
    """``stamp`` moved by ``seconds`` (negative: earlier)."""
    at = datetime.strptime(stamp, _STAMP_FORMAT).replace(tzinfo=UTC)
    return write_stamp(at + timedelta(seconds=seconds))


class BucketFile(StrEnum):
    """The files of a curated bucket ``curated/<task>/<version>/``; a marker is written last."""

    TRAIN = "train.jsonl"
    VAL = "val.jsonl"
    MANIFEST = "manifest.json"
    READY = "_READY"  # complete; the trainer takes it
    REVIEW = "_REVIEW"  # complete, waiting for ``labelq review``
    REJECTED = "_REJECTED"  # never trained
    TRAINED = "_TRAINED"  # an adapter was built from it


def split_file(split: str) -> BucketFile:
    """The file of a ``train`` or ``val`` split."""
    return BucketFile(f"{split}.jsonl")


def labels(source: str, task: str, name: str) -> str:
    """Label records of one chunk (or review, or batch) of a task."""
    return key("labels", source, segment(task), f"{segment(name)}.jsonl")


def labels_prefix(source: str, task: str | None = None) -> str:
    """Every label object of a source, or of one task of it."""
    return key("labels", source, *([segment(task)] if task is not None else [])) + "/"


def task_of_labels(path: str) -> str:
    """The task folder (as stored) of a ``labels/<source>/<task>/...`` path."""
    return path.split("/")[2]


def review_labels(task: str, version: str) -> str:
    """The human labels one review of a bucket produced."""
    return labels("human", task, f"review-{version}")


def inputs(stage: str, task: str, name: str) -> str:
    """The sessions a chunk labelled (curation turns them into training prompts)."""
    return key("inputs", stage, segment(task), f"{segment(name)}.jsonl")


def inputs_prefix(stage: str, task: str) -> str:
    return key("inputs", stage, segment(task)) + "/"


def payload(task: str, content_hash: str) -> str:
    """A claim-checked session's payload (its JSON as ingested), content-addressed: the same session
    always has the same key, so a retried or repeated write writes the same object. Deleted by age
    (``claim_check_retention_days``: ``labelq payloads prune`` or the bucket's lifecycle rule)."""
    return key("payloads", segment(task), segment(content_hash[:2]), f"{segment(content_hash)}.json")


def payloads_prefix(task: str | None = None) -> str:
    """Every claim-checked payload, or those of one task."""
    return key("payloads", *([segment(task)] if task is not None else [])) + "/"


def written(stage: str, task: str, name: str, stamp: str) -> str:
    """The write log: an empty object per chunk whose inputs were kept, written after its label and input
    objects, named ``written/<stage>/<task>/<day>/<time>-<chunk>`` from its write stamp. Its keys sort by
    time, so curation lists only what was written after its last bucket's watermark (a start-after key)."""
    if not _STAMP.fullmatch(stamp):
        raise ValueError(f"not a write stamp: {stamp!r}")
    day, clock = stamp.split("/")
    return key("written", stage, segment(task), day, f"{clock}-{segment(name)}")


def written_prefix(stage: str, task: str, stamp: str | None = None) -> str:
    """A task's write log, or (with ``stamp``) the key just before every entry written at or after it."""
    base = key("written", stage, segment(task)) + "/"
    return base if stamp is None else base + stamp


def parse_written(path: str) -> tuple[str, str, str] | None:
    """``(write stamp, label object, inputs object)`` of a write-log entry, else None."""
    found = _WRITTEN.fullmatch(path)
    if found is None:
        return None
    stage, task, stamp, name = found.groups()
    return stamp, f"labels/{stage}/{task}/{name}.jsonl", f"inputs/{stage}/{task}/{name}.jsonl"


def inputs_of_labels(path: str) -> str:
    """The inputs object written with the label object at ``path`` (``labels/...`` -> ``inputs/...``)."""
    if not path.startswith("labels/"):
        raise ValueError(f"not a label object: {path!r}")
    return "inputs/" + path[len("labels/"):]


def dead_letters(stage: str, task: str | None, name: str) -> str:
    """Dead letters of one chunk (workers) or one flushed batch (ingest), with their reasons."""
    return key("deadletter", stage, segment(task or NO_TASK), f"{segment(name)}.jsonl")


def dead_letters_prefix(stage: str | None = None, task: str | None = None) -> str:
    """Every dead letter, those of one stage, or of one stage and task."""
    parts = [stage] if stage else []
    if stage and task is not None:
        parts.append(segment(task))
    return key("deadletter", *parts) + "/"


def curated_prefix(task: str | None = None) -> str:
    """Every curated bucket, or those of one task."""
    return key("curated", *([segment(task)] if task is not None else [])) + "/"


def bucket(task: str, version: str) -> str:
    """A curated bucket's folder (``version`` is ``v0001``, ``v0002``...)."""
    return key("curated", segment(task), version)


def bucket_file(task: str, version: str, name: BucketFile) -> str:
    return f"{bucket(task, version)}/{name}"


def parse_bucket_file(path: str) -> tuple[str, str, str] | None:
    """``(task folder as stored, version, file name)`` of a path inside a bucket, else None."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "curated":
        return None
    return parts[1], parts[2], parts[3]


class AdapterFile(StrEnum):
    """The files of an adapter version ``adapters/<task>/v<N>/``, in the order they are written, each once
    (create-if-absent): the claim, the adapter's files, the manifest of their hashes, ``metrics.json`` last."""

    CLAIM = "_CLAIM"  # the trainer that took this version number (no other trainer writes here)
    WEIGHTS = "adapter_model.safetensors"
    CONFIG = "adapter_config.json"  # vLLM loads these two
    TRAIN_CONFIG = "train_config.json"
    DATASET = "dataset.json"  # the curated bucket it was trained on
    MANIFEST = "manifest.json"  # the files above with their sha256; its own hash is the version's content hash
    METRICS = "metrics.json"  # evaluation, gate and content hash; a version exists once this exists


def adapter_prefix(task: str, version: int | None = None) -> str:
    """A task's adapters folder, or one version's (``adapters/<task>/v<N>``)."""
    base = key("adapters", segment(task))
    return base if version is None else f"{base}/v{version}"


def adapter_file(task: str, version: int, name: AdapterFile) -> str:
    """One file of an adapter version."""
    return f"{adapter_prefix(task, version)}/{name}"


def adapter_rolled_back(task: str, version: int) -> str:
    """Why and when the agreement monitor rolled a version back (``trainer.monitor``); written once, beside
    the version's files (not one of them: the manifest does not list it)."""
    return f"{adapter_prefix(task, version)}/rolled_back.json"


def shadow(task: str, name: str) -> str:
    """Shadow records of one student chunk: the serving student's answers to sessions of the teacher sample,
    kept for agreement only (not labels: export, audit and curation never read ``shadow/``)."""
    return key("shadow", segment(task), f"{segment(name)}.jsonl")


def shadow_prefix(task: str | None = None) -> str:
    return key("shadow", *([segment(task)] if task is not None else [])) + "/"


def adapter_version_of(path: str) -> int | None:
    """The version of an ``adapters/<task>/v<N>/...`` path, else None."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "adapters" or not parts[2].startswith("v") or not parts[2][1:].isdigit():
        return None
    return int(parts[2][1:])


def registry_mirror(task: str) -> str:
    """The store's copy of a task's adapter pointer (Redis may be lost; this is not)."""
    return f"{adapter_prefix(task)}/registry.json"


def budget_spend(task: str, period_id: str, writer: str) -> str:
    """One writer's durable spend record for a budget period (``labelq.budget.SpendRecord``)."""
    return key("budget", segment(task), segment(period_id), f"{segment(writer)}.json")


def budget_spend_prefix(task: str, period_id: str) -> str:
    """Every writer's spend record of one budget period (their sum is the durable spend)."""
    return key("budget", segment(task), segment(period_id)) + "/"


def batch_jobs_prefix(task: str, input_hash: str | None = None, run: str | None = None) -> str:
    """Batch API jobs of a task, the runs of one input, or the files of one run
    (``batch-jobs/<task>/<input hash>/<run>/``)."""
    parts = [segment(p) for p in (input_hash, run) if p]
    return key("batch-jobs", segment(task), *parts) + "/"


def batch_job_file(task: str, input_hash: str, run: str, name: str) -> str:
    """One file of a Batch API job run: ``job.json``, ``sessions.jsonl``, a part's files, ``done.json``."""
    return key("batch-jobs", segment(task), segment(input_hash), segment(run), segment(name))


def sample_secret_object() -> str:
    """The deployment's teacher-sample HMAC key (32 random bytes, see ``labelq.sampling``); private."""
    return key("secrets", "sample.key")
