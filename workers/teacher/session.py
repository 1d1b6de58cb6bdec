"""One session's way through the teacher: a pure state machine that both modes drive.

The real-time teacher (``labeler.py``) and the Batch API teacher (``batch.py``)
differ only in how requests are sent and answers collected, and in how failed
attempts are counted (a Redis counter that survives redelivery, or batch
rounds). What an answer or a failure means is decided here, without I/O:

    start ─────────────────────────────────────> Ask(first request), or Labelled(cached)
    answered: the contract holds ──────────────> Labelled(label, words)
    answered: broken, not repaired yet ────────> Ask(repair request)      not a failed attempt
    answered: broken after the repair ─────────> Dead(contract_violation, raw answer kept)
    failed: outage (429, 5xx, timeout) ────────> Retry(reason, retry_after_s)  not counted, never Dead
    failed: retryable, attempts left ──────────> Retry(reason, retry_after_s)
    failed: retryable, attempts spent ─────────> Dead(reason, "gave up after N attempts")
    failed: permanent (400, 422) ──────────────> Dead(reason)
    failed: operational (401/403) ─────────────> Halted("auth")
    failed: configuration (404 no such model) ─> Halted("config")
    budget_refused ────────────────────────────> Halted("budget")
    provider_out (circuit breaker open) ───────> Halted("provider")

Ask and Retry wait for the mode to send ``request``; Labelled, Dead and Halted
are final. The spend (tokens, dollars) adds up over every answer paid for,
the repaired one included, and goes on the label record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from labelq.contract import check, repair_instruction
from labelq.render import render_for_task
from labelq.schemas import DeadLetter, LabelRecord, SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from workers.teacher.client import Completion, TeacherCallError
from workers.teacher.prompt import Messages, build_messages, repair_messages


@dataclass(frozen=True, slots=True)
class Ask:
    """Send ``messages`` (the first request, or the one repair request)."""

    messages: Messages
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt with attempts left: send the same request again, later."""

    reason: str
    detail: str
    attempt: int
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Labelled:
    label: str
    words: int
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Dead:
    reason: str
    detail: str
    raw: str | None = None


@dataclass(frozen=True, slots=True)
class Halted:
    """Nothing is wrong with the session: the key was refused, the model does not exist, the
    budget is spent, or the provider is out (the circuit breaker is open)."""

    cause: Literal["auth", "config", "budget", "provider"]


Step = Ask | Retry | Labelled | Dead | Halted
Answered = Labelled | Ask | Dead
Failed = Retry | Dead | Halted


@dataclass(frozen=True, slots=True)
class CachedLabel:
    """A label the cache already holds for this (model, prompt version, content)."""

    label: str
    words: int


@dataclass(slots=True)
class Spend:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class SessionLabelling:
    """The state of one session; ``step`` says where it is."""

    item: SessionItem
    spec: TaskSpec
    max_attempts: int
    step: Step
    request: Messages = field(default_factory=list)  # what Ask and Retry send
    spend: Spend = field(default_factory=Spend)
    repaired: bool = False
    attempts: int = 0  # failed attempts so far, as the mode counts them

    @classmethod
    def start(cls, spec: TaskSpec, settings: Settings, item: SessionItem,
              cached: CachedLabel | None = None) -> SessionLabelling:
        """A session to ask about, or one the cache has answered (nothing to pay for)."""
        if cached is not None:
            return cls(item, spec, settings.teacher_max_attempts, Labelled(cached.label, cached.words, cached=True))
        request = build_messages(spec, render_for_task(spec, settings, item.require_payload()))
        return cls(item, spec, settings.teacher_max_attempts, Ask(request), request)

    @property
    def done(self) -> bool:
        return not isinstance(self.step, (Ask, Retry))

    def answered(self, completion: Completion, cost_usd: float) -> Answered:
        """A paid answer: labelled, one repair request, or dead with the raw answer."""
        self._require_waiting("answered")
        self.spend.input_tokens += completion.input_tokens
        self.spend.output_tokens += completion.output_tokens
        self.spend.cost_usd += cost_usd
        verdict = check(completion.text, self.spec.contract)
        step: Answered
        if verdict.ok:
            step = Labelled(verdict.label, verdict.words)
        elif self.repaired:
            step = Dead("contract_violation", f"answer broke the contract ({verdict.reason}) after one repair",
                        raw=completion.text)
        else:
            self.repaired = True
            self.request = repair_messages(self.request, completion.text,
                                           repair_instruction(verdict, self.spec.contract))
            step = Ask(self.request, repair=True)
        self.step = step
        return step

    def failed(self, error: TeacherCallError, attempt: int | None = None) -> Failed:
        """A request that brought no answer. ``attempt`` is the mode's count of failed
        attempts including this one (default: one more than so far)."""
        self._require_waiting("failed")
        step: Failed
        if error.operational:
            step = Halted("config" if error.config else "auth")
        elif not error.retryable:
            step = Dead(error.reason, str(error))
        elif error.outage:  # the provider is down, not this session: wait, uncounted
            step = Retry(error.reason, str(error), self.attempts, error.retry_after_s)
        else:
            self.attempts = self.attempts + 1 if attempt is None else attempt
            if self.attempts >= self.max_attempts:
                step = Dead(error.reason, f"gave up after {self.attempts} attempts: {error}")
            else:
                step = Retry(error.reason, str(error), self.attempts, error.retry_after_s)
        self.step = step
        return step

    def provider_out(self) -> Halted:
        """The circuit breaker is open: the request was not sent."""
        self._require_waiting("provider_out")
        self.step = Halted("provider")
        return self.step

    def budget_refused(self) -> Halted:
        """The budget would not cover the request: it was not sent."""
        self._require_waiting("budget_refused")
        self.step = Halted("budget")
        return self.step

    def record(self, *, model: str, chunk_id: str, flags: list[str], latency_ms: float = 0.0) -> LabelRecord:
        """The label record of a labelled session (``flags`` from the mode, then cache_hit/repaired)."""
        step = self.step
        if not isinstance(step, Labelled):
            raise ValueError(f"session {self.item.session_id} is not labelled: {step}")
        extra = ["cache_hit"] if step.cached else ["repaired"] if self.repaired else []
        return LabelRecord(
            session_id=self.item.session_id, content_hash=self.item.content_hash, task=self.spec.name,
            label=step.label, source="teacher", model=model, prompt_version=self.spec.prompt_version,
            words=step.words, input_tokens=self.spend.input_tokens, output_tokens=self.spend.output_tokens,
            cost_usd=round(self.spend.cost_usd, 8), latency_ms=round(latency_ms, 1), chunk_id=chunk_id,
            flags=flags + extra)

    def dead_letter(self, *, chunk_id: str | None) -> DeadLetter:
        step = self.step
        if not isinstance(step, Dead):
            raise ValueError(f"session {self.item.session_id} is not dead: {step}")
        return DeadLetter(reason=step.reason, detail=step.detail, stage="teacher", task=self.spec.name,
                          session_id=self.item.session_id, content_hash=self.item.content_hash,
                          chunk_id=chunk_id, raw=step.raw, payload=self.item.require_payload())

    def _require_waiting(self, event: str) -> None:
        if self.done:
            raise ValueError(f"session {self.item.session_id}: {event} after {self.step}")
