"""Object stores behind one interface, chosen by URL: ``file://`` or ``s3://``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from labelq.errors import ConfigError
from labelq.settings import Settings
from labelq.store.base import ObjectStore, StoredObject
from labelq.store.keys import check_key, key, segment
from labelq.store.local import LocalStore
from labelq.store.s3 import S3Store

__all__ = ["LocalStore", "ObjectStore", "S3Store", "StoredObject", "check_key", "key", "open_store", "segment"]


def open_store(settings: Settings, url: str | None = None) -> ObjectStore:
    """Open the store named by ``url`` (default: the settings' store URL)."""
    target = url or settings.effective_store_url
    parts = urlsplit(target)
    if parts.scheme == "file":
        return LocalStore(Path(parts.netloc + parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"store URL {target!r} names no bucket")
        return S3Store(
            parts.netloc, parts.path, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    raise ConfigError(f"unsupported store URL {target!r}: use file:///dir or s3://bucket/prefix")
