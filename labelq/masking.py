"""Settings for display with every secret masked (``labelq config show``): keys, passwords in URLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from labelq.settings import Settings

SECRET_MARKERS = ("key", "secret", "password", "token")


def mask_url(url: str) -> str:
    """Hide the password of a URL (``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        netloc = f"{user}:***@{host}" if user else f":***@{host}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration with every secret masked, for display."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            out[name] = mask_url(secret) if "://" in secret else "***"
        elif value is not None and any(m in name for m in SECRET_MARKERS):
            out[name] = "***"
        elif isinstance(value, Path):
            out[name] = str(value)
        elif isinstance(value, str) and "://" in value:
            out[name] = mask_url(value)
        else:
            out[name] = value
    return out
