"""The ``openai`` backend: a remote OpenAI-compatible student server (``vllm serve --enable-lora``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labelq.contract import response_format
from labelq.engines.base import Adapter, Generation, mean_prob
from labelq.errors import ConfigError, ServiceUnavailable
from labelq.prompts import chat_messages
from labelq.settings import Settings


class OpenAIBackend:
    """A remote OpenAI-compatible student server; the adapter path must be readable by that server."""

    name = "openai"

    def __init__(self, settings: Settings, model: str, concurrency: int = 32) -> None:
        import httpx
        import openai
        from openai import OpenAI

        if not settings.student_base_url:
            raise ConfigError("student_backend=openai needs LABELQ_STUDENT_BASE_URL (the remote server's /v1 URL)")
        key = settings.student_api_key.get_secret_value() if settings.student_api_key else "unused"
        self.model = model
        self._base_url = settings.student_base_url.rstrip("/")
        self._client = OpenAI(base_url=self._base_url, api_key=key, max_retries=3, timeout=120.0)
        self._http = httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {key}"})
        self._openai = openai
        self._loaded: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="labelq-student")

    def _load(self, adapter: Adapter) -> None:
        import httpx

        if adapter.name in self._loaded:
            return
        try:
            response = self._http.post(f"{self._base_url}/load_lora_adapter",
                                       json={"lora_name": adapter.name, "lora_path": adapter.path})
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"the student server is unreachable: {type(exc).__name__}",
                                     dependency="engine") from exc
        if response.status_code >= 500:
            raise ServiceUnavailable(f"the student server failed to load adapter {adapter.name}: "
                                     f"HTTP {response.status_code}", dependency="engine")
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise ConfigError(f"the student server refused adapter {adapter.name}: HTTP {response.status_code} "
                              f"{response.text[:200]} (its path must be readable by the server at "
                              "LABELQ_STUDENT_BASE_URL, with --enable-lora)")
        self._loaded.add(adapter.name)

    def _one(self, prompt: str, model: str, max_new_tokens: int, extra: dict[str, Any]) -> Generation:
        response = self._client.chat.completions.create(
            model=model, messages=chat_messages(prompt), temperature=0.0,  # type: ignore[arg-type]
            max_tokens=max_new_tokens, logprobs=True, **extra)
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        logprobs = [t.logprob for t in content or []]
        tokens = response.usage.completion_tokens if response.usage else len(logprobs)
        return Generation((choice.message.content or "").strip(), mean_prob(logprobs), tokens)

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int,
                 json_schema: dict[str, Any] | None = None) -> list[Generation]:
        if adapter is not None:
            self._load(adapter)
        model = adapter.name if adapter is not None else self.model
        extra: dict[str, Any] = {} if json_schema is None else {"response_format": response_format(model, json_schema)}
        try:
            return list(self._pool.map(lambda p: self._one(p, model, max_new_tokens, extra), prompts))
        except (self._openai.APIConnectionError, self._openai.RateLimitError,  # timeouts are connection errors
                self._openai.InternalServerError) as exc:
            # The server is down or overloaded, not the session: an outage (a 400, say a prompt past the
            # server's context, stays the chunk's failure, which the poison path narrows to its session).
            raise ServiceUnavailable(f"the student server failed: {type(exc).__name__}", dependency="engine") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()
        self._http.close()
