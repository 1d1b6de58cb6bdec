"""Generation engines behind one interface (:class:`StudentBackend`), used by students and the trainer."""

from __future__ import annotations

import importlib.util

from labelq.engines.base import Adapter, Generation, StudentBackend, fit_prompts
from labelq.models import resolve_base_model
from labelq.settings import Settings

__all__ = ["Adapter", "Generation", "StudentBackend", "fit_prompts", "make_backend", "resolve_backend_name"]


def resolve_backend_name(settings: Settings) -> str:
    if settings.student_backend != "auto":
        return settings.student_backend
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def make_backend(settings: Settings, model: str | None = None) -> StudentBackend:
    """The configured backend on ``model`` (default: the settings' student model, resolved by
    :func:`labelq.models.resolve_base_model`: ConfigError when ``tiny`` is not built; nothing is built here)."""
    if model is None:
        model = resolve_base_model(settings)
    name = resolve_backend_name(settings)
    if name == "vllm":
        from labelq.engines.vllm_engine import VllmBackend

        return VllmBackend(settings, model)
    if name == "transformers":
        from labelq.engines.transformers_engine import TransformersBackend

        return TransformersBackend(settings, model)
    from labelq.engines.openai_engine import OpenAIBackend

    return OpenAIBackend(settings, model)
