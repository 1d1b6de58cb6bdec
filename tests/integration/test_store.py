"""Both store backends against the same contract; S3 through a real S3-protocol server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from labelq.errors import InvalidKey, ObjectNotFound
from labelq.settings import Settings
from labelq.store import ObjectStore, S3Store, key, open_store, segment

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(Settings(state_dir=tmp_path), f"file://{tmp_path / 'root'}")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(Settings(state_dir=tmp_path, s3_endpoint_url=endpoint), f"s3://{bucket}/deploy/a")


def test_round_trip_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("labels/teacher/c1.jsonl", b"one\n")
    store.put_bytes("labels/teacher/c2.jsonl", b"two\n")
    store.put_bytes("labels/student/c3.jsonl", b"three\n")
    store.put_bytes("labelsX/other", b"x")
    assert store.get_bytes("labels/teacher/c2.jsonl") == b"two\n"
    assert list(store.list("labels/teacher/")) == ["labels/teacher/c1.jsonl", "labels/teacher/c2.jsonl"]
    assert list(store.list("labels/")) == [
        "labels/student/c3.jsonl", "labels/teacher/c1.jsonl", "labels/teacher/c2.jsonl"]
    assert "labelsX/other" in list(store.list(""))
    assert store.exists("labels/student/c3.jsonl")
    store.delete("labels/student/c3.jsonl")
    assert not store.exists("labels/student/c3.jsonl")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("labels/student/c3.jsonl")
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01" * 100_000)
    store.put_file("adapters/t/v1/adapter_model.safetensors", src)
    dest = tmp_path / "dl" / "a.bin"
    store.get_file("adapters/t/v1/adapter_model.safetensors", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert b"".join(store.open_read("adapters/t/v1/adapter_model.safetensors")) == src.read_bytes()


@pytest.mark.parametrize("evil", ["../escape", "a/../../b", "/etc/passwd", "a\\..\\b", ".."])
def test_keys_cannot_escape(store: ObjectStore, evil: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(evil, b"x")
    # Encoded as a segment, the same text is a harmless name inside the prefix.
    safe = key("labels", segment(evil), "x")
    store.put_bytes(safe, b"ok")
    assert store.get_bytes(safe) == b"ok"
    assert all(k.startswith("labels/") for k in store.list("labels/"))


def test_local_writes_are_atomic(tmp_path: Path) -> None:
    store = open_store(Settings(state_dir=tmp_path), f"file://{tmp_path / 'root'}")
    big_a, big_b = b"a" * 3_000_000, b"b" * 3_000_000
    store.put_bytes("obj", big_a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            data = store.get_bytes("obj")
            seen.add(data[:1] + data[-1:] + str(len(data)).encode())

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(30):
        store.put_bytes("obj", big_a if i % 2 else big_b)
    stop.set()
    thread.join()
    assert seen <= {b"aa3000000", b"bb3000000"}
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".tmp-")]
    assert list(store.list("")) == ["obj"]


def test_put_if_absent_lets_exactly_one_of_many_writers_create_a_key(store: ObjectStore) -> None:
    assert store.put_if_absent("adapters/t/v1/_CLAIM", b"mine") is True
    assert store.put_if_absent("adapters/t/v1/_CLAIM", b"theirs") is False
    assert store.put_if_absent("adapters/t/v1/_CLAIM", b"mine") is True  # a retried write of the same bytes
    assert store.get_bytes("adapters/t/v1/_CLAIM") == b"mine"
    if isinstance(store, S3Store):
        return  # S3 makes the check and the write one step; moto checks, then writes (not atomic under a race)
    barrier = threading.Barrier(8)
    won: list[bytes] = []

    def race(i: int) -> None:
        body = f"writer-{i}".encode() * 1000
        barrier.wait()
        if store.put_if_absent("adapters/t/v2/_CLAIM", body):
            won.append(body)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and store.get_bytes("adapters/t/v2/_CLAIM") == won[0]
    assert list(store.list("adapters/t/")) == ["adapters/t/v1/_CLAIM", "adapters/t/v2/_CLAIM"]  # no temp files


def test_listing_is_in_key_order_and_resumes_after_a_key(store: ObjectStore) -> None:
    # '-' sorts before '/': a file "a-b" comes before the folder "a/", as S3 orders keys.
    names = ["w/a/x", "w/a-b", "w/a.c/y", "w/a/z/1", "w/b", "w/20260101/120000.000001-c", "w/20260101/120000.0000-d",
             "wx"]
    for name in names:
        store.put_bytes(name, b"")
    everything = sorted(n for n in names if n.startswith("w/"))
    assert list(store.list("w/")) == everything
    assert list(store.list("w/a")) == [n for n in everything if n.startswith("w/a")]
    for after in ("", "w/", "w/a", "w/a/", "w/a/x", "w/a/y", "w/20260101/120000.000001", "w/zzz"):
        assert list(store.list("w/", start_after=after)) == [n for n in everything if n > after], after


def test_s3_listing_pages_lazily(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "deploy", endpoint_url=s3_endpoint, list_page_size=3)
    calls: list[dict[str, object]] = []
    store._client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                       lambda params, **_: calls.append(params))
    keys = [f"labels/teacher/t/{i:03d}.jsonl" for i in range(10)]
    for k in keys:
        store.put_bytes(k, b"")
    listing = store.list("labels/teacher/")
    assert next(listing) == keys[0] and len(calls) == 1  # one page asked for, not all of them
    assert [keys[0], *listing] == keys and len(calls) == 4  # 10 keys in pages of 3
    calls.clear()
    assert list(store.list("labels/", start_after=keys[6])) == keys[7:]
    assert len(calls) == 1 and calls[0]["StartAfter"] == f"deploy/{keys[6]}"
