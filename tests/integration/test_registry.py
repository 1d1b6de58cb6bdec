from __future__ import annotations

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.errors import ConfigError
from labelq.keyspace import AdapterFile
from labelq.registry import Registry
from labelq.settings import Settings
from labelq.store import open_store

pytestmark = pytest.mark.integration


def test_promote_pin_rollback_and_restore(settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    reg = Registry(settings, redis_client, store)
    assert reg.serving("t") is None and reg.next_version("t") == 1
    for v in (1, 2, 3):
        store.put_bytes(keyspace.adapter_file("t", v, AdapterFile.METRICS), orjson.dumps({"exact_match": v / 10}))
    with pytest.raises(ConfigError, match="no adapter v9"):
        reg.promote("t", 9)
    reg.promote("t", 1)
    reg.promote("t", 3)
    assert reg.serving("t") == 3 and reg.next_version("t") == 4
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
                        keyspace.adapter_history(settings, "t"))
    assert reg.serving("t") is None
    assert reg.restore("t") is True
    assert reg.state("t") == before and reg.serving("t") == 3
    assert reg.metrics("t", 2) == {"exact_match": 0.2}
    assert reg.restore("other") is False
