"""structlog setup: JSON lines when not on a TTY, with ids bound and secrets scrubbed.

Bind context once per unit of work with :func:`bind` (task id, chunk id,
session id); every log line inside carries it. Values of keys that look like
secrets, and passwords inside URLs, are masked before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"(key|secret|password|token|authorization)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_BEARER = re.compile(r"(sk-[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+")


def scrub_text(text: str) -> str:
    """Mask URL passwords and OpenAI-style keys inside free text."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _BEARER.sub(lambda m: m.group(1)[:3] + "***", text)


def _is_count(name: str, value: Any) -> bool:
    """``input_tokens=812`` is a number of tokens, not a token."""
    return name.endswith("_tokens") and isinstance(value, int) and not isinstance(value, bool)


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event.items()):
        if _SECRET_KEY.search(name) and value is not None and name != "event" and not _is_count(name, value):
            event[name] = "***"
        elif isinstance(value, str):
            event[name] = scrub_text(value)
    return event


def configure(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and stdlib logging once, at an entry point."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not getattr(out, "isatty", lambda: False)())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=getattr(out, "isatty", lambda: False)())
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, force=True)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


@contextmanager
def bind(**ids: Any) -> Iterator[None]:
    """Bind ids (task_id, chunk_id, session_id, ...) to every log line inside."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
        yield
