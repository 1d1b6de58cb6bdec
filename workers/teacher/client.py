"""Teacher backends behind one interface: any OpenAI-compatible API, or the replay teacher.

Errors are sorted once, here, into what the labeler does with them:

    TeacherCallError(reason, retryable, outage, operational, config, retry_after_s)
      outage:       429 (quota included; Retry-After honoured), 5xx, 408, timeouts, resets:
                    the provider is down; retried without counting, never dead-lettered,
                    and counted by the circuit breaker shared by all teacher workers
      retryable:    malformed bodies (and every outage): retried, counted per session
      operational:  401/403 - the key is wrong: pause the queue, lose nothing
      config:       404 - the provider has no such model: pause the queue, lose nothing
      none:         400/422 - this session cannot be labelled: dead-letter it

A 400 that refuses ``max_tokens`` (a reasoning model the family rule in
``workers.teacher.reasoning`` does not know, e.g. an Azure deployment name) is
not the session's fault: the same request is sent again at once with
``max_completion_tokens`` (the same cap: the reservation already covers it), and
the model is remembered as a reasoning model for the rest of the process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from labelq.render import estimate_tokens
from labelq.schemas import SessionItem
from labelq.settings import Settings
from workers.teacher.reasoning import (
    is_reasoning_model,
    learn_reasoning_model,
    length_params,
    refuses_max_tokens,
    usage_tokens,
)


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str


class TeacherCallError(Exception):
    def __init__(self, reason: str, message: str, *, retryable: bool = False, outage: bool = False,
                 operational: bool = False, config: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable or outage
        self.outage = outage
        self.operational = operational or config
        self.config = config
        self.retry_after_s = retry_after_s


class TeacherClient(Protocol):
    model: str
    is_replay: bool

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       temperature: float, session: SessionItem,
                       response_format: dict[str, Any] | None = None) -> Completion:
        """One answer; ``max_tokens`` caps every billed output token (a reasoning model's thinking too);
        ``response_format`` (a JSON schema contract's, see ``labelq.contract.response_format``) is sent as is."""
        ...

    async def aclose(self) -> None: ...


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                return None
    return None


class OpenAIClient:
    """Chat completions through the ``openai`` SDK (OpenAI, Azure, vLLM, any compatible server)."""

    is_replay = False

    def __init__(self, settings: Settings) -> None:
        import openai

        # No key only on a self-hosted base URL (workers.teacher.preflight); the SDK insists on one.
        key = settings.teacher_api_key.get_secret_value() if settings.teacher_api_key else "not-set"
        self.model = settings.teacher_model
        self._settings = settings
        self._openai = openai
        # Retries are ours (budget, rate limit and deadline aware), never the SDK's.
        self._client = openai.AsyncOpenAI(base_url=settings.teacher_base_url, api_key=key,
                                          timeout=settings.teacher_timeout_s, max_retries=0)
        self._completion_type = openai.types.chat.ChatCompletion

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       temperature: float, session: SessionItem,
                       response_format: dict[str, Any] | None = None) -> Completion:
        oa = self._openai
        extra = {} if response_format is None else {"response_format": response_format}
        try:
            try:
                resp = await self._create(messages, max_tokens, temperature, extra)
            except oa.BadRequestError as exc:
                if is_reasoning_model(self._settings, self.model) or not refuses_max_tokens(exc.body):
                    raise
                learn_reasoning_model(self.model)
                resp = await self._create(messages, max_tokens, temperature, extra)
        except oa.RateLimitError as exc:
            quota = getattr(exc, "code", None) == "insufficient_quota"
            raise TeacherCallError("teacher_quota" if quota else "teacher_http_429",
                                   "the provider's quota is spent" if quota else "rate limited by the provider",
                                   outage=True, retry_after_s=_retry_after(exc.response.headers)) from None
        except (oa.AuthenticationError, oa.PermissionDeniedError) as exc:
            raise TeacherCallError("teacher_auth", f"the provider refused the key (HTTP {exc.status_code})",
                                   operational=True) from None
        except oa.APITimeoutError:
            raise TeacherCallError("teacher_timeout", "request timed out", outage=True) from None
        except oa.APIConnectionError as exc:
            raise TeacherCallError("teacher_connection", f"connection failed: {type(exc.__cause__).__name__}",
                                   outage=True) from None
        except oa.NotFoundError:
            raise TeacherCallError("teacher_model_not_found",
                                   f"the provider has no model {self.model!r} (HTTP 404): set LABELQ_TEACHER_MODEL "
                                   "(and LABELQ_TEACHER_BASE_URL) to one it serves", config=True) from None
        except oa.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code == 408:
                raise TeacherCallError(f"teacher_http_{exc.status_code}", "server error", outage=True,
                                       retry_after_s=_retry_after(exc.response.headers)) from None
            raise TeacherCallError(f"teacher_http_{exc.status_code}", "the provider rejected the request") from None
        except (oa.APIResponseValidationError, ValueError) as exc:
            raise TeacherCallError("teacher_malformed", f"malformed response: {type(exc).__name__}",
                                   retryable=True) from None
        return self._parse(resp)

    async def _create(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                      extra: dict[str, Any]) -> Any:
        body = {"model": self.model, "messages": messages,
                **length_params(self._settings, self.model, max_tokens, temperature), **extra}
        # chat.completions.create, less its walk over the typed parameters (about half a
        # millisecond a request, on the one core a worker process has; these are plain JSON).
        return await self._client.post("/chat/completions", body=body, cast_to=self._completion_type)

    def _parse(self, resp: Any) -> Completion:
        try:
            text = resp.choices[0].message.content
            if not isinstance(text, str):
                raise TypeError("no text content")
            input_tokens, output_tokens = usage_tokens(resp.usage.model_dump())  # reasoning counted once
            return Completion(text, input_tokens, output_tokens, str(resp.model or self.model))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise TeacherCallError("teacher_malformed", f"malformed response: {exc}", retryable=True) from None

    async def aclose(self) -> None:
        await self._client.close()


class ReplayClient:
    """The offline demo teacher: answers with the synthetic data set's reference labels.

    The only reader of a session's reference field, and only when chosen
    (``LABELQ_TEACHER_BACKEND=replay``, or the demo): anywhere else a session
    that brings its own "reference" would be labelling itself. Named ``replay``
    in records, logs and reports; priced by the ``replay`` entry of the price
    table (like gpt-4o) so that cost comparisons stay realistic.
    """

    is_replay = True
    model = "replay"

    def __init__(self, settings: Settings) -> None:
        self._latency_s = settings.teacher_replay_latency_s
        self._field = settings.reference_field

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       temperature: float, session: SessionItem,
                       response_format: dict[str, Any] | None = None) -> Completion:
        await asyncio.sleep(self._latency_s)
        reference = session.require_payload().get(self._field)
        label = reference.get("label") if isinstance(reference, dict) else reference
        if not isinstance(label, str) or not label:
            raise TeacherCallError("replay_no_reference",
                                   f"replay teacher: session has no reference label at {self._field!r}")
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        return Completion(label, prompt_tokens, estimate_tokens(label), self.model)

    async def aclose(self) -> None:
        return None


def make_client(settings: Settings) -> TeacherClient:
    """The teacher the settings chose (``workers.teacher.preflight.check_teacher`` says whether it may run)."""
    if settings.teacher_backend == "replay":
        return ReplayClient(settings)
    return OpenAIClient(settings)
