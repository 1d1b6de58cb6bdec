"""Adapter versions are written once and checked against the registry's content hash wherever they are
read: a tampered copy, local or in the store, is refused, removed and fetched again (real Redis and store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from labelq import adapter_manifest, keyspace
from labelq.errors import DecodeError, IntegrityError
from labelq.keyspace import AdapterFile
from labelq.queue.task import Paused
from labelq.settings import Settings
from labelq.store import LocalStore, ObjectStore, open_store
from labelq.synth import generate
from tests.support.helpers import dead_letters
from tests.support.student import TASK, FakeEngine, publish_adapter
from tests.support.teacher import make_chunk
from workers.student.cache import FETCH_ATTEMPTS, AdapterCache
from workers.student.labeler import StudentRuntime, run_student_chunk

pytestmark = pytest.mark.integration
WEIGHTS = b"\0" * 64


def adapter_files(folder: Path, weights: bytes = WEIGHTS) -> Path:
    folder.mkdir(parents=True)
    (folder / AdapterFile.CONFIG).write_text('{"r": 8}')
    (folder / AdapterFile.WEIGHTS).write_bytes(weights)
    return folder


def events(logs: list[dict[str, object]], name: str) -> int:
    return sum(e["event"] == name for e in logs)


def test_a_version_is_written_once(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    store = open_store(settings)
    names = (AdapterFile.CONFIG, AdapterFile.WEIGHTS)
    ours, theirs = adapter_files(tmp_path / "a"), adapter_files(tmp_path / "b", b"\1" * 64)
    files = {n: ours / n for n in names}
    first = adapter_manifest.publish(store, TASK, 1, files)
    assert adapter_manifest.publish(store, TASK, 1, files) == first  # a retried publish of the same bytes
    other = {n: theirs / n for n in names}
    with pytest.raises(IntegrityError, match="already holds other bytes"):
        adapter_manifest.publish(store, TASK, 1, other)
    assert store.get_bytes(keyspace.adapter_file(TASK, 1, AdapterFile.WEIGHTS)) == WEIGHTS
    assert adapter_manifest.publish(store, TASK, 2, other) != first  # one byte: another content hash
    with pytest.raises(DecodeError):
        adapter_manifest.parse_manifest(b'{"files": 3}')


def test_a_tampered_local_copy_is_refused_removed_and_fetched_again(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    content_hash = publish_adapter(settings, redis_client, adapter_files(tmp_path / "a"), 1)
    store, root = open_store(settings), tmp_path / "cache"
    first = AdapterCache(store, root).get(TASK, 1, content_hash)
    weights = Path(first.path) / AdapterFile.WEIGHTS
    weights.write_bytes(b"\1" * 64)  # same size, other bytes, while no process runs
    cache = AdapterCache(store, root)  # a restarted worker checks its copy before it first uses it
    with capture_logs() as logs:
        cache.get(TASK, 1, content_hash)
    assert weights.read_bytes() == WEIGHTS
    assert events(logs, "adapter_copy_refused") == 1 and events(logs, "adapter_downloaded") == 1
    served = cache.get(TASK, 1, content_hash)
    weights.write_bytes(b"\1" * 65)  # changed under a running worker
    with capture_logs() as logs:
        again = cache.get(TASK, 1, content_hash)
    assert weights.read_bytes() == WEIGHTS and events(logs, "adapter_copy_refused") == 1
    assert again.lora_id != served.lora_id  # new bytes, new id: the engine must not keep the weights it loaded
    with capture_logs() as logs:
        assert cache.get(TASK, 1, content_hash) == again  # unchanged: no download, same id
    assert logs == []


class CorruptFirstDownload(LocalStore):
    """A store whose first download of the weights arrives damaged (a bad disk, a broken proxy)."""

    damaged = 0

    def get_file(self, key: str, path: Path) -> None:
        super().get_file(key, path)
        if key.endswith(AdapterFile.WEIGHTS) and not self.damaged:
            self.damaged += 1
            path.write_bytes(b"\7" * 64)


def test_a_damaged_download_is_refused_and_fetched_again(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    content_hash = publish_adapter(settings, redis_client, adapter_files(tmp_path / "a"), 1)
    store = open_store(settings)
    assert isinstance(store, LocalStore)
    with capture_logs() as logs:
        adapter = AdapterCache(CorruptFirstDownload(store.root), tmp_path / "cache").get(TASK, 1, content_hash)
    assert (Path(adapter.path) / AdapterFile.WEIGHTS).read_bytes() == WEIGHTS
    assert events(logs, "adapter_download_refused") == 1 and events(logs, "adapter_downloaded") == 1


@pytest.mark.parametrize("tamper", ["weights", "whole_version"])
def test_a_tampered_store_copy_is_refused_until_it_is_right_again(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, tamper: str) -> None:
    content_hash = publish_adapter(settings, redis_client, adapter_files(tmp_path / "a"), 1)
    store, root = open_store(settings), tmp_path / "cache"
    saved = {n: store.get_bytes(keyspace.adapter_file(TASK, 1, n))
             for n in (AdapterFile.WEIGHTS, AdapterFile.MANIFEST)}
    _overwrite(store, tmp_path / "b", tamper)
    cache = AdapterCache(store, root)
    with capture_logs() as logs, pytest.raises(IntegrityError) as refused:
        cache.get(TASK, 1, content_hash)
    assert ("registry" if tamper == "whole_version" else "sha256 in its manifest") in str(refused.value)
    assert events(logs, "adapter_download_refused") == FETCH_ATTEMPTS
    assert not [p for p in root.rglob("*") if p.is_file()]  # nothing refused is kept
    for name, data in saved.items():
        store.put_bytes(keyspace.adapter_file(TASK, 1, name), data)
    assert (Path(cache.get(TASK, 1, content_hash).path) / AdapterFile.WEIGHTS).read_bytes() == WEIGHTS


def _overwrite(store: ObjectStore, folder: Path, tamper: str) -> None:
    """Weights replaced behind the manifest's back; or a whole version rewritten consistently by a writer
    that did not hold its claim (its manifest matches its files, not the registry)."""
    other = adapter_files(folder, b"\1" * 64)
    store.put_file(keyspace.adapter_file(TASK, 1, AdapterFile.WEIGHTS), other / AdapterFile.WEIGHTS)
    if tamper == "whole_version":
        manifest = adapter_manifest.build_manifest(
            TASK, 1, {n: other / n for n in (AdapterFile.CONFIG, AdapterFile.WEIGHTS)})
        store.put_bytes(keyspace.adapter_file(TASK, 1, AdapterFile.MANIFEST), manifest)


def test_a_student_whose_adapter_is_wrong_in_the_store_waits_and_labels_nothing(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    publish_adapter(settings, redis_client, adapter_files(tmp_path / "a"), 1)
    store = open_store(settings)
    _overwrite(store, tmp_path / "b", "weights")
    engine = FakeEngine("/not/here")  # a base this machine cannot hash: only the adapter's content is checked
    runtime = StudentRuntime(settings, store, redis_client, backend_factory=lambda s: engine)
    with pytest.raises(Paused, match="labelq adapter pin") as paused:
        run_student_chunk(runtime, make_chunk(list(generate(4, seed=3))), lambda chunk, items: None)
    assert "v1" in paused.value.reason and paused.value.wait_s == settings.student_wait_s
    assert engine.calls == 0 and dead_letters(settings, "student") == []
