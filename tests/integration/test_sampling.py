"""The teacher sample's key: made once per deployment, kept in the store, shared by every producer,
and the sample it picks is out of a submitter's reach."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from labelq import keyspace, sampling
from labelq.errors import ConfigError
from labelq.hashing import content_hash
from labelq.settings import Settings, load_settings
from labelq.store import open_store
from labelq.synth import generate
from producer.routing import PolicyRouter
from producer.validate import Accepted

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts like a new process: no key cached."""
    monkeypatch.setattr(sampling, "_cache", {})


def accepted(session: dict[str, object]) -> Accepted:
    return Accepted(str(session["session_id"]), content_hash(session), b"{}")


def sampled_ids(settings: Settings, client: redis.Redis, sessions: list[dict[str, object]]) -> set[str]:
    """The sessions a fresh producer (past the seed phase) sends to the teacher's sample."""
    client.hset(keyspace.routing(settings, "t"), keyspace.RoutingField.SEEDED.value, settings.curation_seed_size)
    router = PolicyRouter(settings, client)
    return {str(s["session_id"]) for s in sessions if router.route("t", accepted(s)) == ("teacher", "sample")}


def test_the_key_is_made_once_kept_privately_and_survives_restarts_and_a_flush(
        settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings.model_copy(update={"routing_sample_rate": 0.1})
    store = open_store(settings)
    sessions = list(generate(400, seed=41))
    first = sampled_ids(settings, redis_client, sessions)
    key = store.get_bytes(keyspace.sample_secret_object())
    assert len(key) == sampling.SECRET_BYTES and redis_client.get(keyspace.sample_secret(settings)) == key
    path = Path(store.url.removeprefix("file://")) / keyspace.sample_secret_object()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # readable by its owner only
    assert 20 <= len(first) <= 70  # about 10% of 400

    monkeypatch.setattr(sampling, "_cache", {})  # a producer restart
    assert sampled_ids(settings, redis_client, sessions) == first
    redis_client.delete(keyspace.sample_secret(settings))  # Redis flushed: the store's copy is read first
    monkeypatch.setattr(sampling, "_cache", {})
    assert sampled_ids(settings, redis_client, sessions) == first
    assert redis_client.get(keyspace.sample_secret(settings)) is None  # nothing was made again
    assert store.get_bytes(keyspace.sample_secret_object()) == key


def test_racing_producers_all_take_the_one_key_that_landed_first(settings: Settings, redis_url: str) -> None:
    store = open_store(settings)
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def producer() -> None:  # a producer with nothing cached, finding no key in the store
        start.wait()
        keys.append(sampling._load_or_create(settings, redis.Redis.from_url(redis_url), store))

    threads = [threading.Thread(target=producer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert store.get_bytes(keyspace.sample_secret_object()) == keys[0]
    assert list(store.list("secrets/")) == [keyspace.sample_secret_object()]


def test_another_deployments_key_picks_another_sample(settings: Settings, redis_client: redis.Redis,
                                                      tmp_path: Path) -> None:
    settings = settings.model_copy(update={"routing_sample_rate": 0.1})
    sessions = list(generate(400, seed=42))
    ours = sampled_ids(settings, redis_client, sessions)
    theirs = sampled_ids(settings.model_copy(update={"store_url": f"file://{tmp_path / 'other'}",
                                                     "redis_key_prefix": settings.redis_key_prefix + "o:"}),
                         redis_client, sessions)
    assert ours and theirs and ours != theirs


def test_the_setting_overrides_the_stored_key_and_is_checked(settings: Settings, redis_client: redis.Redis) -> None:
    secret = "correct horse battery staple"
    given = settings.model_copy(update={"routing_sample_rate": 0.1, "sample_secret": SecretStr(secret)})
    sessions = list(generate(300, seed=43))
    sampled = sampled_ids(given, redis_client, sessions)
    assert sampled == {str(s["session_id"]) for s in sessions
                       if sampling.sample_fraction(secret.encode(), content_hash(s)) < 0.1}
    assert list(open_store(settings).list("secrets/")) == []  # nothing made, nothing written
    assert redis_client.get(keyspace.sample_secret(settings)) is None
    assert secret not in repr(given) and secret not in given.model_dump_json()
    with pytest.raises(ConfigError, match="LABELQ_SAMPLE_SECRET must be at least 16 characters"):
        load_settings(sample_secret="short")
