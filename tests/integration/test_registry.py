from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import redis
from structlog.testing import capture_logs

from labelq import keyspace
from labelq.errors import ConfigError
from labelq.keyspace import AdapterFile
from labelq.registry import Registry
from labelq.settings import Settings
from labelq.store import LocalStore, open_store

pytestmark = pytest.mark.integration


def test_promote_pin_rollback_and_restore(settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    reg = Registry(settings, redis_client, store)
    assert reg.serving("t") is None
    for v in (1, 2, 3):
        store.put_bytes(keyspace.adapter_file("t", v, AdapterFile.METRICS), orjson.dumps({"exact_match": v / 10}))
    with pytest.raises(ConfigError, match="no adapter v9"):
        reg.promote("t", 9)
    reg.promote("t", 1)
    reg.promote("t", 3)
    assert reg.serving("t") == 3 and reg.claim_version("t", {}) == 4
    reg.record_hash("t", 3, "sha256:three")
    reg.pin("t", 1)
    assert reg.serving("t") == 1
    reg.pin("t", None)
    assert reg.rollback("t") == 1 and reg.serving("t") == 1
    with pytest.raises(ConfigError, match="no earlier"):
        reg.rollback("t")
    reg.promote("t", 2)
    reg.pin("t", 3)
    before = reg.state("t")
    redis_client.delete(keyspace.adapter_current(settings, "t"), keyspace.adapter_pinned(settings, "t"),  # Redis lost
                        keyspace.adapter_history(settings, "t"), keyspace.adapter_hashes(settings, "t"))
    assert reg.serving("t") is None
    assert reg.restore("t") is True
    assert reg.state("t") == before and reg.serving("t") == 3
    assert reg.content_hash("t", 3) == "sha256:three"
    assert reg.metrics("t", 2) == {"exact_match": 0.2}
    assert reg.restore("other") is False


def test_ensure_rebuilds_only_what_redis_lost(settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    reg = Registry(settings, redis_client, store)
    for task in ("a", "b c"):  # a task name that its store folder encodes
        store.put_bytes(keyspace.adapter_file(task, 1, AdapterFile.METRICS), b"{}")
        store.put_bytes(keyspace.adapter_file(task, 2, AdapterFile.METRICS), b"{}")
        reg.promote(task, 1)
        reg.promote(task, 2)
    assert reg.ensure("a") is False and reg.ensure_all() == []  # nothing lost: nothing touched
    reg.pin("a", 1)
    for task in ("a", "b c"):
        redis_client.delete(keyspace.adapter_current(settings, task), keyspace.adapter_pinned(settings, task),
                            keyspace.adapter_history(settings, task))
    assert reg.ensure_all() == ["a", "b c"]
    assert reg.serving("a") == 1 and reg.serving("b c") == 2 and reg.state("b c")["history"] == [1, 2]
    assert reg.ensure("never-trained") is False and reg.serving("never-trained") is None


class StaleListing(LocalStore):
    """A store whose listings lag its writes (they show nothing)."""

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[str]:
        return iter(())


def test_versions_are_claimed_once_each_and_never_reused_after_a_redis_loss(
        settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    reg = Registry(settings, redis_client, store)
    with ThreadPoolExecutor(8) as pool:  # eight trainers at once
        claimed = list(pool.map(lambda i: reg.claim_version("t", {"trainer": i}), range(8)))
    assert sorted(claimed) == list(range(1, 9))
    owners = {orjson.loads(store.get_bytes(keyspace.adapter_file("t", v, AdapterFile.CLAIM)))["trainer"]
              for v in claimed}
    assert owners == set(range(8))
    redis_client.delete(keyspace.adapter_counter(settings, "t"))  # Redis lost: the store still holds v1..v8
    assert reg.claim_version("t", {}) == 9
    # A counter behind the store (an old Redis snapshot) and a listing that does not show v3..v9 yet:
    # the claim objects refuse those numbers, the next free one is taken.
    redis_client.set(keyspace.adapter_counter(settings, "t"), 2)
    assert isinstance(store, LocalStore)
    with capture_logs() as logs:
        assert Registry(settings, redis_client, StaleListing(store.root)).claim_version("t", {}) == 10
    assert [e["adapter_version"] for e in logs if e["event"] == "adapter_version_taken"] == list(range(3, 10))


def test_content_hash_falls_back_to_the_report_in_the_store(settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    reg = Registry(settings, redis_client, store)
    store.put_bytes(keyspace.adapter_file("t", 1, AdapterFile.METRICS), orjson.dumps({"content_hash": "sha256:ab"}))
    store.put_bytes(keyspace.adapter_file("t", 2, AdapterFile.METRICS), orjson.dumps({"exact_match": 0.5}))
    assert reg.content_hash("t", 1) == "sha256:ab"  # Redis never had it (lost, not restored)
    assert reg.content_hash("t", 2) is None and reg.content_hash("t", 3) is None  # an old version; none at all
    reg.record_hash("t", 1, "sha256:cd")
    assert reg.content_hash("t", 1) == "sha256:cd"  # Redis first
