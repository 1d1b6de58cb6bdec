"""The embedded Redis: started on demand, shared per state dir, stopped cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from labelq.redis_server import EmbeddedRedis, resolve_redis_url
from labelq.settings import Settings

pytestmark = pytest.mark.integration


def test_shared_between_processes_and_durable(tmp_path: Path) -> None:
    state = tmp_path / "s"
    embedded = EmbeddedRedis(state)
    try:
        url = resolve_redis_url(Settings(state_dir=state))
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        # Another process with the same state dir finds the same server.
        code = (
            "from labelq.settings import Settings; from labelq.redis_server import connect;"
            f"c = connect(Settings(state_dir={str(state)!r})); print(c.get('k').decode())"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "v"
        assert (state / "redis" / "server.info").stat().st_mode & 0o077 == 0  # password file is private
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=client.connection_pool.connection_kwargs["port"]).get("k")
        assert embedded.stop() is True
        assert embedded.url_if_running() is None
        # Restarting keeps the data: AOF was fsynced on shutdown.
        client = redis.Redis.from_url(embedded.ensure_running())
        assert client.get("k") == b"v"
    finally:
        embedded.stop()
    assert embedded.stop() is False


def test_concurrent_starts_give_one_server(tmp_path: Path) -> None:
    state = tmp_path / "s"
    code = (
        "from labelq.redis_server import EmbeddedRedis; from pathlib import Path;"
        f"print(EmbeddedRedis(Path({str(state)!r})).ensure_running())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    try:
        urls = {p.communicate(timeout=60)[0].strip() for p in procs}
        assert len(urls) == 1
    finally:
        EmbeddedRedis(state).stop()


def test_relative_state_dir_and_clear_start_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labelq.errors import ServiceUnavailable

    monkeypatch.chdir(tmp_path)
    settings = Settings(state_dir=Path("relative/state"))
    assert settings.state_dir.is_absolute()
    embedded = EmbeddedRedis(settings.state_dir)
    try:
        assert redis.Redis.from_url(resolve_redis_url(settings)).ping()
    finally:
        embedded.stop()
    monkeypatch.setattr("labelq.redis_server.redis_config_lines",
                        lambda *a: ["this-is-not-a-directive yes"])
    with pytest.raises(ServiceUnavailable, match="failed to start"):
        EmbeddedRedis(tmp_path / "other").ensure_running()


def test_the_embedded_redis_has_a_memory_ceiling(tmp_path: Path) -> None:
    """LABELQ_REDIS_MAXMEMORY_MB with noeviction; one started by a labelq before the ceiling gets it."""
    settings = Settings(state_dir=tmp_path / "s", redis_maxmemory_mb=64)
    embedded = EmbeddedRedis(settings.state_dir, settings.redis_maxmemory_mb)
    try:
        client = redis.Redis.from_url(resolve_redis_url(settings))
        assert client.config_get("maxmemory") == {"maxmemory": str(64 << 20)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.config_set("maxmemory", 0)  # as an older labelq started it
        assert redis.Redis.from_url(resolve_redis_url(settings)).config_get("maxmemory") == {"maxmemory": str(64 << 20)}
    finally:
        embedded.stop()
