"""What the trainer reports for one trained bucket: ``adapters/<task>/v<N>/metrics.json``.

``TrainingReport.to_dict()`` is the file's content; ``from_dict`` reads it back
(the demo's report, tools). Evaluation scores are ``trainer.evaluate.EvalScores``,
training stats ``trainer.lora.TrainStats``, the gate's checks ``trainer.gate.GateCheck``, the
confidence calibration ``trainer.calibration.Calibration`` (students read its ``threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labelq.errors import DecodeError
from labelq.schemas import decode_as
from trainer.calibration import Calibration
from trainer.evaluate import EvalScores
from trainer.gate import GateCheck
from trainer.lora import TrainStats


@dataclass(frozen=True, slots=True)
class ServingEval:
    """The adapter that served when the new one was trained, scored on the same val split."""

    version: int
    scores: EvalScores

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self.scores.to_dict()}  # flat, as in metrics.json


@dataclass(frozen=True, slots=True)
class TrainingReport:
    task: str
    version: int  # the adapter version this run produced
    dataset_version: str  # the curated bucket it was trained on
    prompt_version: str
    base_model: str
    train: TrainStats
    base: EvalScores  # the bare base model on the val split
    adapter: EvalScores  # the new adapter on the val split
    serving: ServingEval | None  # None when no adapter served yet
    promoted: bool
    gate: str  # why the promotion gate decided so
    created_at: str
    seconds: float  # training and evaluation, wall time
    base_hash: str | None = None  # the base it was trained on (labelq.models); None in reports before it was kept
    content_hash: str | None = None  # of the version's manifest (labelq.adapter_manifest); None before it was kept
    checks: tuple[GateCheck, ...] = ()  # every check of the gate; empty in reports before they were kept
    calibration: Calibration | None = None  # the students' confidence threshold; None before it was kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "version": self.version, "dataset_version": self.dataset_version,
            "prompt_version": self.prompt_version, "base_model": self.base_model,
            "base_hash": self.base_hash, "train": self.train.to_dict(),
            "base": self.base.to_dict(), "adapter": self.adapter.to_dict(),
            "serving": None if self.serving is None else self.serving.to_dict(),
            "promoted": self.promoted, "gate": self.gate, "created_at": self.created_at, "seconds": self.seconds,
            "content_hash": self.content_hash, "checks": [c.to_dict() for c in self.checks],
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> TrainingReport:
        """Read a ``metrics.json`` (dict); DecodeError when it is not one."""
        if not isinstance(data, dict):
            raise DecodeError(f"not a training report: a {type(data).__name__}")
        serving = data.get("serving")
        if isinstance(serving, dict):
            data = {**data, "serving": {"version": serving.get("version"), "scores": serving}}
        return decode_as(cls, data, "training report")
