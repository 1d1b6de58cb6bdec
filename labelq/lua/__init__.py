"""Lua scripts that run inside Redis, one ``.lua`` file each (KEYS, ARGV, the reply and the
algorithm are described in the file's comments).

:func:`script` reads a file once per process and registers it once per Redis
client; redis-py's ``Script`` then sends only ``EVALSHA`` and the script's text
only when the server does not know it yet (a restarted or a new server).

:class:`Batch` sends scripts and plain commands in one round trip. (A redis-py
pipeline asks ``SCRIPT EXISTS`` before every execution that holds a script: a
second round trip each time.) :func:`chain` runs one script, then a second
only when the first answered 1, atomically and in one round trip.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal, get_args, overload

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

Name = Literal[
    "agreement_pair", "budget_extend", "budget_reserve", "budget_seed", "budget_settle", "commit_chunk", "enqueue",
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


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a script: its name, KEYS and ARGV."""

    name: Name
    keys: list[Any]
    args: list[Any]


# The two scripts become local functions (KEYS and ARGV their parameters); ARGV[1] and ARGV[2]
# say how many keys and arguments are the first one's.
_CHAIN = """-- {first}, then {then} when it returned 1 (labelq.lua.chain)
local function first(KEYS, ARGV)
{first_source}
end
local function then_(KEYS, ARGV)
{then_source}
end
local nkeys, nargs = tonumber(ARGV[1]), tonumber(ARGV[2])
local k1, a1, k2, a2 = {{}}, {{}}, {{}}, {{}}
for i = 1, #KEYS do
  if i <= nkeys then k1[#k1 + 1] = KEYS[i] else k2[#k2 + 1] = KEYS[i] end
end
for i = 3, #ARGV do
  if i <= nargs + 2 then a1[#a1 + 1] = ARGV[i] else a2[#a2 + 1] = ARGV[i] end
end
local answer = first(k1, a1)
if answer ~= 1 then return {{answer}} end
return {{answer, then_(k2, a2)}}
"""


def chain(client: aioredis.Redis, first: Name, then: Name) -> Callable[[Call, Call], Awaitable[list[Any]]]:
    """Scripts ``first`` and ``then`` as one: ``then`` runs only when ``first`` returned 1, in the
    same atomic step and round trip. The chained call answers ``[first's reply]`` or
    ``[1, then's reply]``. Each script stays in its own file; this only joins them."""
    name = f"{first}>{then}"
    registered = _REGISTERED.setdefault(client, {})
    found: AsyncScript | None = registered.get(name)
    if found is None:
        found = registered[name] = client.register_script(_CHAIN.format(
            first=first, then=then, first_source=source(first), then_source=source(then)))

    async def call(a: Call, b: Call) -> list[Any]:
        reply: list[Any] = await found(keys=[*a.keys, *b.keys], args=[len(a.keys), len(a.args), *a.args, *b.args])
        return reply

    return call


class Batch:
    """Scripts and commands sent in one round trip: a non-transactional pipeline.

    Queue plain commands on :attr:`pipe`, scripts with :meth:`script`; ``execute`` returns
    the replies in order and raises the first error. A script is sent as ``EVALSHA``
    alone; one the server does not know (restarted since this process loaded it) fails
    alone with NOSCRIPT and is run again on its own, after the rest of the batch: use a
    batch only for steps whose order does not matter.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pipe: Pipeline = client.pipeline(transaction=False)
        self._scripts: dict[int, tuple[AsyncScript, list[Any], list[Any]]] = {}

    def script(self, name: Name, keys: list[Any], args: list[Any]) -> int:
        """Queue script ``name``; the index of its reply."""
        found = script(self.client, name)
        index = len(self.pipe)
        self.pipe.evalsha(found.sha, len(keys), *keys, *args)
        self._scripts[index] = (found, keys, args)
        return index

    def __len__(self) -> int:
        return len(self.pipe)

    async def execute(self) -> list[Any]:
        replies: list[Any] = await self.pipe.execute(raise_on_error=False)
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError) and index in self._scripts:
                found, keys, args = self._scripts[index]
                replies[index] = await found(keys=keys, args=args)  # loads it, then EVALSHA
            elif isinstance(reply, Exception):
                raise reply
        return replies
