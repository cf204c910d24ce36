"""Garbage collection: what no commit refers to goes, what any may refer to stays, also while
writes run and deduplicate against the very data being collected."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from pathlib import Path

import pytest

from pfsfuse.api.types import Delete, Put
from pfsfuse.chunks import packs
from pfsfuse.metadata.errors import FailedPrecondition
from pfsfuse.mount.trees import Trees

MiB = 1 << 20


def put(store, path: str, data: bytes, repo: str = "r", ref: str = "master"):
    return store.write_files(repo, ref, [Put(path, stream=io.BytesIO(data))])


def read(store, path: str, ref: str = "master", repo: str = "r") -> bytes:
    return b"".join(store.get_file(repo, ref, path))


def pack_files(store) -> list[Path]:
    return sorted(p for p in Path(store.objects.root, "packs").rglob("*") if p.is_file())


def raw_store_holds(store, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in pack_files(store))


@pytest.fixture
def store(store):
    store.create_repo("r")
    return store


@pytest.fixture
def small_packs(store, monkeypatch):
    """Packs of 1 MiB, each indexed as soon as it is durable: many packs, and chunks indexed
    while their write is still running."""
    monkeypatch.setattr(packs, "_SYNC_PACKS", 1)
    monkeypatch.setattr(
        store.chunks, "writer", lambda target=MiB: packs.PackWriter(store.objects, store.chunks.hash, target)
    )
    return store


def test_collect_frees_what_only_deleted_commits_referred_to(store):
    keep, gone = os.urandom(3 * MiB), os.urandom(3 * MiB)
    put(store, "keep.bin", keep)
    doomed = put(store, "gone.bin", gone).commit
    assert store.garbage_collect(dry_run=True).chunk_bytes == 0
    store.delete_commit("r", doomed)
    dry = store.garbage_collect(dry_run=True)
    assert dry.dry_run and dry.chunk_bytes == len(gone) and dry.packs_deleted == 1
    assert len(pack_files(store)) == 2  # a dry run deletes nothing
    done = store.garbage_collect()
    assert (done.chunks, done.chunk_bytes, done.packs_deleted) == (dry.chunks, dry.chunk_bytes, 1)
    assert done.pages > 0 and done.page_bytes > 0  # the deleted commit's tree
    assert read(store, "keep.bin") == keep
    again = store.garbage_collect()
    assert (again.chunks, again.packs_deleted, again.pages) == (0, 0, 0)


def test_deleted_sensitive_data_is_gone_from_the_chunk_store(store):
    secret = os.urandom(500) + b"SECRET-7f3a9c" + os.urandom(500)  # random: stored uncompressed
    public = os.urandom(2 * MiB)
    first = store.write_files(
        "r", "master", [Put("secret.txt", stream=io.BytesIO(secret)), Put("public.bin", stream=io.BytesIO(public))]
    ).commit
    store.write_files("r", "master", [Delete("secret.txt")])
    assert raw_store_holds(store, secret)  # one pack holds both files
    store.delete_commit("r", first)
    result = store.garbage_collect()
    assert result.packs_rewritten == 1 and result.chunks == 1
    assert not raw_store_holds(store, secret)
    assert read(store, "public.bin") == public
    with pytest.raises(Exception, match="not found"):
        read(store, "secret.txt")


class _Paused(io.RawIOBase):
    """A stream that blocks on its first read until released."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)
        self.reading = threading.Event()
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self.reading.set()
        assert self.release.wait(30)
        return self.data.readinto(b)


def test_a_write_in_flight_keeps_what_it_refers_to_through_a_collection(small_packs):
    store = small_packs
    old = os.urandom(3 * MiB)
    store.delete_commit("r", put(store, "old.bin", old).commit)  # `old` is dead now
    new, tail = os.urandom(3 * MiB), os.urandom(MiB)
    paused = _Paused(tail)
    ops = [
        Put("a.bin", stream=io.BytesIO(old)),  # deduplicates against the dead chunks
        Put("new.bin", stream=io.BytesIO(new)),  # uploaded and mostly indexed, in no commit yet
        Put("b.bin", stream=paused),
    ]
    done: list = []
    writer = threading.Thread(target=lambda: done.append(store.write_files("r", "master", iter(ops))))
    writer.start()
    try:
        assert paused.reading.wait(30)
        result = store.garbage_collect(orphan_age=0)
        assert (result.chunks, result.packs_deleted, result.packs_rewritten) == (0, 0, 0)
        assert result.pages > 0  # the deleted commit's tree did go
    finally:
        paused.release.set()
        writer.join(30)
    assert done and read(store, "a.bin") == old and read(store, "new.bin") == new
    assert read(store, "b.bin") == tail and store.fsck() == []
    # Once nothing refers to them any more, they go.
    for c in store.list_commit("r"):
        store.delete_commit("r", c.id)
    store.garbage_collect(orphan_age=0)
    assert pack_files(store) == []


def test_writes_and_collections_at_once_lose_nothing(small_packs):
    """Writers put fresh and previously deleted data (which dedups against chunks a collection
    may be deleting) and delete commits, while collections run back to back."""
    store = small_packs
    expected: dict[tuple[str, str], bytes] = {}  # (commit, path) -> content
    graveyard: list[bytes] = []  # contents of deleted commits
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    counts = {"writes": 0, "reuses": 0}

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            i = 0
            while not stop.is_set():
                i += 1
                with lock:
                    reuse = bool(graveyard) and rng.random() < 0.5
                    data = rng.choice(graveyard) if reuse else os.urandom(rng.randrange(1, 3 * MiB))
                    counts["writes"] += 1
                    counts["reuses"] += reuse
                path = f"w{n}/{i % 5}"
                cid = put(store, path, data).commit
                if rng.random() < 0.4:
                    store.delete_commit("r", cid)
                    with lock:
                        graveyard.append(data)
                else:
                    with lock:
                        expected[(cid, path)] = data
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    try:
        while counts["writes"] < 60 or counts["reuses"] < 10:
            assert time.monotonic() < deadline and not errors, (counts, errors)
            store.garbage_collect(orphan_age=0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    store.garbage_collect(orphan_age=0)
    assert store.fsck() == []
    for (cid, path), data in expected.items():
        assert read(store, path, cid) == data


def test_orphan_packs_go_once_old_enough_and_no_write_may_own_them(store):
    def orphan() -> bytes:
        with store.chunks.writer() as w:
            data = os.urandom(1000)
            w.add(store.chunks.hash(data), data)
            [(_, loc)] = w.flush()  # durable, never indexed: what a crash leaves
        return loc.pack

    p1 = orphan()
    first = store.garbage_collect()  # seen for the first time: kept for the default hour
    assert (first.orphan_packs, first.orphans_waiting) == (0, 1)
    assert store.objects.exists(packs.pack_key(p1))
    with store.guard.write():  # a write in flight, which may yet index its packs
        p2 = orphan()
        kept = store.garbage_collect(orphan_age=0)
        assert (kept.orphan_packs, kept.orphans_waiting) == (0, 2)
    gone = store.garbage_collect(orphan_age=0)
    assert (gone.orphan_packs, gone.orphans_waiting) == (2, 0)
    assert not store.objects.exists(packs.pack_key(p1)) and not store.objects.exists(packs.pack_key(p2))
    assert list(store.db.scan("gc")) == []  # no sightings left behind


def test_readers_holding_moved_locations_look_again(store):
    a, b = os.urandom(MiB), os.urandom(MiB)
    first = store.write_files("r", "master", [Put("a", stream=io.BytesIO(a)), Put("b", stream=io.BytesIO(b))]).commit
    store.write_files("r", "master", [Delete("b")])
    store.delete_commit("r", first)
    refs = [c for c, _ in store.read_plan("r", "master", "a").chunks]
    stale = {c.hash: store.location(c.hash) for c in refs}
    trees = Trees(store)
    trees.store = store.chunks  # reads the object store itself, as a trusted mount does
    trees.fetch(refs)
    assert store.garbage_collect().packs_rewritten == 1  # `a` moved to a new pack
    current = store.location
    store.location = lambda h: stale.get(h) or current(h)
    try:
        stale_read = store.read_chunks(refs)
        store.location = current  # the retry asks again
        assert b"".join(stale_read) == a
    finally:
        store.location = current
    trees._chunks = type(trees._chunks)(1 << 30)  # forget the bytes, keep the stale locations
    trees.fetch(refs)
    assert b"".join(trees.cached_chunk(c.hash) for c in refs) == a


def test_one_collection_at_a_time(store):
    with store.exclusive:
        with pytest.raises(FailedPrecondition, match="already running"):
            store.garbage_collect()


class _HeldBack:
    """Stands in for the index lock: the first time the `armed` thread asks for it, that thread
    waits for `go` first."""

    def __init__(self, lock):
        self.lock = lock
        self.armed: threading.Thread | None = None
        self.waiting = threading.Event()
        self.go = threading.Event()

    def acquire(self, *args, **kwargs) -> bool:
        if threading.current_thread() is self.armed:
            self.armed = None
            self.waiting.set()
            assert self.go.wait(30)
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def test_a_pack_indexed_after_the_collection_looked_is_kept(store, monkeypatch):
    """A write whose pack is durable but not indexed when a collection starts, which indexes it
    after the collection read the index and ends before the collection judges unindexed packs:
    the collection must know that the pack was indexed, or it deletes a live pack as an orphan."""
    data = os.urandom(1000)
    held = _HeldBack(store.db.lock)
    monkeypatch.setattr(store.db, "lock", held)
    record = store.record_locations

    def recording(locations) -> None:
        if locations:  # the write's only pack, durable now: hold it back before it is indexed
            held.armed = threading.current_thread()
        record(locations)

    monkeypatch.setattr(store, "record_locations", recording)
    scan = store.db.scan

    def scanning(cf: str, *args, **kwargs):
        yield from scan(cf, *args, **kwargs)
        if cf == "chunks" and not held.go.is_set():  # the collection read the index
            held.go.set()
            writer.join(30)  # the write indexes its pack and commits

    monkeypatch.setattr(store.db, "scan", scanning)
    done: list = []
    writer = threading.Thread(target=lambda: done.append(put(store, "f", data)))
    writer.start()
    try:
        assert held.waiting.wait(30)
        [pack] = pack_files(store)  # durable, listed by the collection, not indexed yet
        store.garbage_collect(orphan_age=0)
    finally:
        held.go.set()
        writer.join(30)
    assert done and pack.exists()
    assert read(store, "f") == data and store.fsck() == []
