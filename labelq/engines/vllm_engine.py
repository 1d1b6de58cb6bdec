"""The ``vllm`` backend: in-process ``vllm.LLM`` with a ``LoRARequest`` per adapter version."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from labelq.engines.base import Adapter, Generation, fit_prompts, mean_prob
from labelq.errors import EngineDead
from labelq.logging import get_logger
from labelq.prompts import chat_messages
from labelq.settings import Settings
from labelq.special_tokens import neutralise_all

log = get_logger(__name__)


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
            "model": model, "enable_lora": True, "max_lora_rank": settings.student_max_lora_rank,
            "max_loras": settings.student_max_loras,
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

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int,
                 json_schema: dict[str, Any] | None = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._llm is None:
            self._llm = self._start()
        request = None if adapter is None else LoRARequest(adapter.name, adapter.lora_id, adapter.path)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=1, structured_outputs=None
                                if json_schema is None else StructuredOutputsParams(json=json_schema, disable_any_whitespace=True))
        tokenizer = self._llm.get_tokenizer()
        prompts = fit_prompts(tokenizer, neutralise_all(tokenizer, prompts), self._max_len - max_new_tokens)
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
            answers.append(Generation(text, mean_prob(chosen), max(0, tokens)))
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
