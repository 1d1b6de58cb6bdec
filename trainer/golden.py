"""A task's golden set: hand-written cases every new adapter must answer well to be promoted. Pure.

The file sits beside the task's spec, ``<spec name>.golden.jsonl`` (a spec in ``LABELQ_SPECS_DIR`` brings
its own; the built-in ``session-label`` ships one). One JSON object a line (blank lines are skipped)::

    {"name": "refund-chat", "session": {...a session payload...},
     "label": "Contacts support chat about refund status",
     "rules": [{"mentions": "refund"}, {"max_words": 6}, {"not_mentions": "return"}]}

``name`` (unique) and ``session`` are required, and at least one of ``label`` and ``rules``. A case passes
when the answer is within the task's output contract, equals ``label`` after normalisation (lower case,
punctuation dropped: ``labelq.contract.normalise_for_match``) when one is given, and keeps every rule:
``mentions`` / ``not_mentions`` (the normalised answer contains / does not contain the normalised text),
``max_words`` (at most that many words). A missing file means no golden check; a malformed one is a
``ConfigError`` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labelq.contract import check, normalise_for_match
from labelq.errors import ConfigError
from labelq.spec import Contract, spec_paths
from trainer.gate import GoldenOutcome

GOLDEN_SUFFIX = ".golden.jsonl"


class GoldenRule(BaseModel):
    """Exactly one of its fields."""

    model_config = ConfigDict(extra="forbid")

    mentions: str | None = Field(default=None, min_length=1)
    not_mentions: str | None = Field(default=None, min_length=1)
    max_words: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> GoldenRule:
        if len(self.model_fields_set) != 1:
            raise ValueError("a rule has exactly one of mentions, not_mentions, max_words")
        return self


class GoldenCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    session: dict[str, Any]
    label: str | None = Field(default=None, min_length=1)
    rules: list[GoldenRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _expects_something(self) -> GoldenCase:
        if self.label is None and not self.rules:
            raise ValueError("a case needs a label, rules, or both")
        return self


def golden_path(task: str, specs_dir: Path | None) -> Path:
    """Where ``task``'s golden set lives: beside the spec file that defines the task."""
    spec = spec_paths(specs_dir)[task]
    return spec.with_name(spec.stem + GOLDEN_SUFFIX)


def load_golden(path: Path) -> list[GoldenCase] | None:
    """The cases in ``path``; None when there is no such file; ConfigError (file and line) when malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    cases: list[GoldenCase] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = GoldenCase.model_validate(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"golden set {path} line {number} is not JSON: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(f"golden set {path} line {number} is invalid: {exc}") from None
        if case.name in names:
            raise ConfigError(f"golden set {path} line {number}: case name {case.name!r} is used twice")
        names.add(case.name)
        cases.append(case)
    if not cases:
        raise ConfigError(f"golden set {path} has no cases (delete it to run without a golden check)")
    return cases


def judge(case: GoldenCase, answer: str, contract: Contract) -> str | None:
    """None when ``answer`` passes ``case``, else why not."""
    verdict = check(answer, contract)
    if not verdict.ok:
        return f"outside the contract ({verdict.reason})"
    text = normalise_for_match(verdict.label)
    if case.label is not None and text != normalise_for_match(case.label):
        return f"{verdict.label!r} is not {case.label!r}"
    for rule in case.rules:
        if rule.mentions is not None and normalise_for_match(rule.mentions) not in text:
            return f"{verdict.label!r} does not mention {rule.mentions!r}"
        if rule.not_mentions is not None and normalise_for_match(rule.not_mentions) in text:
            return f"{verdict.label!r} mentions {rule.not_mentions!r}"
        if rule.max_words is not None and len(verdict.label.split()) > rule.max_words:
            return f"{verdict.label!r} has more than {rule.max_words} words"
    return None


def judge_all(cases: list[GoldenCase], answers: list[str], contract: Contract) -> GoldenOutcome:
    failures = []
    for case, answer in zip(cases, answers, strict=True):
        why = judge(case, answer, contract)
        if why is not None:
            failures.append(f"{case.name}: {why}")
    return GoldenOutcome(total=len(cases), failures=tuple(failures))
