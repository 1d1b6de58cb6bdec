"""Lua scripts that run inside Redis, one ``.lua`` file each (KEYS, ARGV, the reply and the
algorithm are described in the file's comments).

:func:`script` reads a file once per process and registers it once per Redis
client; redis-py's ``Script`` then sends only ``EVALSHA`` and the script's text
only when the server does not know it yet (a restarted or a new server).
"""

from __future__ import annotations

import weakref
from functools import cache
from importlib.resources import files
from typing import Any, Literal, get_args, overload

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, Script

Name = Literal[
    "budget_extend", "budget_reserve", "budget_seed", "budget_settle", "commit_chunk", "enqueue",
    "escalation_grant", "lock_release", "lock_renew", "park", "rate_acquire", "rate_settle", "redrive",
    "seed_route", "seen_audit", "seen_lookup", "unpark", "version_claim",
]
NAMES: tuple[Name, ...] = get_args(Name)

_REGISTERED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


@cache
def source(name: Name) -> str:
    """The text of ``<name>.lua``, read once per process."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@overload
def script(client: aioredis.Redis, name: Name) -> AsyncScript: ...
@overload
def script(client: redis.Redis, name: Name) -> Script: ...
def script(client: redis.Redis | aioredis.Redis, name: Name) -> Script | AsyncScript:
    """``name`` registered on ``client``: the same object on every call with that client."""
    registered = _REGISTERED.setdefault(client, {})
    found: Script | AsyncScript | None = registered.get(name)
    if found is None:
        found = registered[name] = client.register_script(source(name))
    return found
