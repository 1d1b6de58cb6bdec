"""The teacher sample's key: membership by a keyed hash, so a submitter cannot choose it.

A session's content hash is public: whoever writes a session can compute it, and
change a spare field until the hash lands in the 2% sample (about 50 tries a
session), sending as many sessions as they like to the paid teacher and into
the training data. So membership is decided by HMAC-SHA256 of the content hash
under a per-deployment secret that submitters never see; a session still
routes the same way every time it is seen, on every producer.

Where the secret comes from, first found wins:

1. ``LABELQ_SAMPLE_SECRET`` (every producer must be given the same one);
2. the store's ``secrets/sample.key`` (32 random bytes, written with the store's
   private permissions: a local file is ``0600``, an S3 object is private);
3. made now: each producer that finds neither proposes 32 random bytes with
   Redis ``SET NX``; the one that landed is the one they all take, and it is
   written to the store, the durable copy (a flushed Redis loses nothing: the
   store is read first).

It is read once per process and kept. Never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

import redis

from labelq import keyspace
from labelq.errors import ConfigError, ObjectNotFound
from labelq.settings import Settings
from labelq.store import ObjectStore

SECRET_BYTES = 32
MIN_SECRET_BYTES = 16

_cache: dict[tuple[str, str], bytes] = {}  # (store URL, Redis key prefix) -> secret
_lock = threading.Lock()


def sample_fraction(secret: bytes, content_hash: str) -> float:
    """A uniform number in [0, 1) fixed by the content hash and the secret; unknown to whoever lacks the secret."""
    digest = hmac.new(secret, content_hash.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sample_secret(settings: Settings, client: redis.Redis, store: ObjectStore) -> bytes:
    """The deployment's sample key (see the module doc): the setting, else the store's, else made once."""
    if settings.sample_secret is not None:
        return settings.sample_secret.get_secret_value().encode()
    cache_key = (store.url, settings.redis_key_prefix)
    with _lock:
        if cache_key not in _cache:
            _cache[cache_key] = _load_or_create(settings, client, store)
        return _cache[cache_key]


def _load_or_create(settings: Settings, client: redis.Redis, store: ObjectStore) -> bytes:
    path = keyspace.sample_secret_object()
    try:
        kept = store.get_bytes(path)
    except ObjectNotFound:
        kept = b""
    if kept:
        if len(kept) < MIN_SECRET_BYTES:
            raise ConfigError(f"the sample key {path} in {store.url} is damaged ({len(kept)} bytes): restore it, or "
                              "set LABELQ_SAMPLE_SECRET")
        return kept
    key = keyspace.sample_secret(settings)
    client.set(key, secrets.token_bytes(SECRET_BYTES), nx=True)  # racing producers: the first proposal wins
    chosen = client.get(key)
    if not isinstance(chosen, bytes) or len(chosen) < MIN_SECRET_BYTES:
        raise ConfigError(f"the sample key in Redis ({key}) is damaged: delete it, or set LABELQ_SAMPLE_SECRET")
    store.put_bytes(path, chosen)  # every racer writes the same bytes
    return chosen
