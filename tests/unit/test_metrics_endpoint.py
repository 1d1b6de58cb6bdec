"""The metrics endpoint: loopback unless configured, basic auth when exposed, refused open."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from labelq.errors import ConfigError
from labelq.metrics import require_basic_auth, start_server
from labelq.settings import Settings, is_loopback, load_settings


def test_default_host_is_loopback_and_open_hosts_need_a_password() -> None:
    assert Settings().metrics_host == "127.0.0.1"
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        Settings(metrics_port=9100, metrics_host=host)  # no password needed: only this machine reaches it
    for host in ("0.0.0.0", "", "::", "10.1.2.3", "metrics.internal"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="LABELQ_METRICS_PASSWORD") as refused:
            load_settings(None, metrics_port=9100, metrics_host=host)
        assert "LABELQ_METRICS_ALLOW_UNAUTHENTICATED" in str(refused.value)
        assert "LABELQ_METRICS_HOST" in str(refused.value)
        Settings(metrics_port=9100, metrics_host=host, metrics_password="pw")  # type: ignore[arg-type]
        Settings(metrics_port=9100, metrics_host=host, metrics_allow_unauthenticated=True)
    # An empty password is no password; with no port there is no endpoint to refuse.
    with pytest.raises(ConfigError, match="LABELQ_METRICS_PASSWORD"):
        load_settings(None, metrics_port=9100, metrics_host="0.0.0.0", metrics_password="")
    Settings(metrics_host="0.0.0.0")


def test_the_refusal_comes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELQ_METRICS_PORT", "9100")
    monkeypatch.setenv("LABELQ_METRICS_HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="LABELQ_METRICS_PASSWORD"):
        load_settings()
    monkeypatch.setenv("LABELQ_METRICS_PASSWORD", "s3cret-metrics")
    assert load_settings().metrics_password is not None


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"labelq_up 1\n"]


@pytest.fixture
def guarded() -> Iterator[str]:
    server = start_server(require_basic_auth(_app, "prometheus", "pässword-1"), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str, authorization: str | None) -> tuple[int, bytes, str | None]:
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("WWW-Authenticate")


def _basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def test_basic_auth_lets_only_the_right_credentials_in(guarded: str) -> None:
    refused = [None, "", "Bearer abc", "Basic", "Basic !!!not-base64", _basic(b"prometheus"),
               _basic(b"prometheus:wrong"), _basic(b"other:p\xc3\xa4ssword-1"), _basic(b":p\xc3\xa4ssword-1"),
               _basic(b"prometheus:p\xc3\xa4ssword-1x"), _basic(b"prometheus:p\xc3\xa4ssword-")]
    for header in refused:
        status, body, challenge = _get(guarded, header)
        assert (status, challenge) == (401, 'Basic realm="labelq metrics"'), header
        assert b"labelq_up" not in body
    for header in (_basic(b"prometheus:p\xc3\xa4ssword-1"), "basic " + _basic(b"prometheus:p\xc3\xa4ssword-1")[6:]):
        assert _get(guarded, header)[:2] == (200, b"labelq_up 1\n")


def test_queue_depths_without_redis_leave_the_family_empty_and_the_scrape_alive() -> None:
    from labelq.metrics import QueueDepthCollector
    from labelq.redis_server import free_port

    settings = Settings(redis_url=f"redis://:pw@127.0.0.1:{free_port()}/0")  # type: ignore[arg-type]
    depths, parked = list(QueueDepthCollector(settings).collect())
    assert depths.name == "labelq_queue_depth" and depths.samples == []
    assert parked.name == "labelq_parked_chunks" and parked.samples == []
