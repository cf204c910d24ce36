"""The on-disk chunk cache, alone and under a ChunkReader."""

import errno
import multiprocessing
import os
import random
import threading
import time

import pytest

from helpers import write_chunks
from pfsfuse.chunks import ZSTD, ChunkCache, ChunkStore, CorruptChunk, LocalStore, ObjectStore, cache_for
from pfsfuse.chunks.cache import parse_size

SEED = 0x5EED


def pack(i: int) -> bytes:
    return i.to_bytes(16, "big")


def block(i: int, size: int = 10_000) -> bytes:
    return i.to_bytes(4, "big") * (size // 4)


def cached_bytes(cache: ChunkCache) -> int:
    return sum(f.stat().st_blocks * 512 for f in cache.dir.rglob("*") if f.is_file())


def test_put_get_drop(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 20)
    assert cache.get(pack(1), [(0, 10)]) == [None]
    cache.put(pack(1), 0, block(1))
    cache.put(pack(1), 10_000, block(2))
    cache.flush()
    assert cache.get(pack(1), [(0, 10_000), (10_000, 10_000), (5_000, 10_000)]) == [
        block(1),
        block(2),
        block(1)[5_000:] + block(2)[:5_000],
    ]
    cache.drop(pack(1))
    assert cache.get(pack(1), [(0, 10_000)]) == [None]
    cache.drop(pack(1))  # dropping a missing pack is fine


def test_holes_read_as_zeros_and_the_end_is_a_miss(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 30)
    cache.put(pack(1), 1 << 20, block(1))  # the ranges before it are a hole
    cache.flush()
    assert cache.get(pack(1), [(0, 10_000), (1 << 20, 10_000), (1 << 20, 10_001), (2 << 20, 1)]) == [
        bytes(10_000),
        block(1),
        None,
        None,
    ]
    assert cached_bytes(cache) < 100_000  # the hole takes no space, and is not counted


def test_bounded_and_least_recently_used_evicted(tmp_path):
    cache = ChunkCache(tmp_path, 100_000)
    cache.put(pack(0), 0, block(0))
    cache.flush()
    for i in range(1, 40):
        cache.put(pack(i), 0, block(i))
        cache.flush()
        # the pack read all along stays; the mtimes need to differ
        time.sleep(0.002)
        assert cache.get(pack(0), [(0, 10_000)]) == [block(0)]
        assert cached_bytes(cache) <= 100_000
    assert cache.get(pack(1), [(0, 10_000)]) == [None]  # long unused: evicted
    assert cache.get(pack(39), [(0, 10_000)]) == [block(39)]


def test_survives_restart(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 20)
    cache.put(pack(7), 0, block(7))
    cache.flush()
    assert ChunkCache(tmp_path, 1 << 20).get(pack(7), [(0, 10_000)]) == [block(7)]


def test_failed_write_is_not_an_error(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 20)
    (tmp_path / pack(1).hex()).mkdir()  # a directory where the pack's file should be
    cache.put(pack(1), 0, block(1))
    cache.flush()
    cache.put(pack(2), 0, block(2))  # the writer goes on
    cache.flush()
    assert cache.get(pack(2), [(0, 10_000)]) == [block(2)]


def test_former_layout_removed(tmp_path):
    (tmp_path / "ab").mkdir()  # a file per chunk, in directories by hash prefix
    (tmp_path / "ab" / ("ab" * 16)).write_bytes(b"x" * 1000)
    cache = ChunkCache(tmp_path, 1 << 20)
    cache.put(pack(1), 0, block(1))  # the first put scans the cache
    cache.flush()
    assert not (tmp_path / "ab").exists()


class CountingStore(ObjectStore):
    """Delegates to a store, counting gets; `garble` flips a byte of every body got."""

    def __init__(self, inner: ObjectStore):
        super().__init__()
        self.inner, self.url, self.gets, self.garble = inner, inner.url, 0, False

    def _get(self, key, offset, length):
        self.gets += 1
        data = self.inner.get(key, offset, length)
        return bytes([data[0] ^ 1]) + data[1:] if self.garble else data

    def _put(self, key, data, durable):
        self.inner.put(key, data, durable=durable)

    def _exists(self, key):
        return self.inner.exists(key)

    def _delete(self, key):
        self.inner.delete(key)

    def _list(self, prefix):
        return self.inner.list(prefix)


def test_reader_uses_cache(tmp_path):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    chunks = ChunkStore(objects, SEED, cache=ChunkCache(tmp_path / "cache", 64 << 20))
    data = os.urandom(6 << 20)
    located = write_chunks(chunks, data)
    assert b"".join(chunks.reader.read_range(located)) == data
    chunks.reader.cache.flush()
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data
    assert objects.gets == got  # all from the cache
    # a reader in another process (a fresh cache object) finds them too
    again = ChunkStore(objects, SEED, cache=ChunkCache(tmp_path / "cache", 64 << 20))
    assert b"".join(again.reader.read_range(located, 1 << 20, 3 << 20)) == data[1 << 20 : 4 << 20]
    assert objects.gets == got


def compressible(size: int) -> bytes:
    return b"".join(b"%d %s\n" % (i, os.urandom(8).hex().encode()) for i in range(size // 20))[:size]


@pytest.mark.parametrize("make", [os.urandom, compressible])
def test_damaged_cache_bytes_fetched_again(tmp_path, make):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    cache = ChunkCache(tmp_path / "cache", 64 << 20)
    chunks = ChunkStore(objects, SEED, cache=cache)
    data = make(8 << 20)
    located = write_chunks(chunks, data)
    assert len(located) > 3
    assert make is os.urandom or all(loc.codec == ZSTD for _, _, loc in located)
    assert b"".join(chunks.reader.read_range(located)) == data
    cache.flush()
    (_, _, one), (_, _, two) = located[1], located[2]
    with open(cache._path(one.pack), "r+b") as f:  # bit rot
        f.seek(one.offset + 100)
        byte = f.read(1)
        f.seek(one.offset + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open(cache._path(two.pack), "r+b") as f:  # a torn write: the file ends in the chunk
        f.truncate(two.offset + 5)
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data
    # the two damaged chunks only, fetched together if in the same pack
    assert objects.gets - got == len({one.pack, two.pack})
    cache.flush()
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data
    assert objects.gets == got  # cached again, whole


def test_read_out_of_order(tmp_path):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    cache = ChunkCache(tmp_path / "cache", 64 << 20)
    chunks = ChunkStore(objects, SEED, cache=cache)
    data = os.urandom(6 << 20)
    located = write_chunks(chunks, data, target=64 << 20)  # one pack
    assert len(located) > 2
    for c in reversed(located):  # each chunk lands after a hole at first
        chunks.reader.read(*c)
        cache.flush()
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data
    assert objects.gets == got


def test_full_disk(tmp_path, monkeypatch):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    cache = ChunkCache(tmp_path / "cache", 64 << 20)
    chunks = ChunkStore(objects, SEED, cache=cache)
    data = os.urandom(4 << 20)
    located = write_chunks(chunks, data)
    pwrite = os.pwrite

    def half_then_full(fd, view, offset):  # writes half, then the disk is full
        if len(view) > 1000:
            return pwrite(fd, view[: len(view) // 2], offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", half_then_full)
    assert b"".join(chunks.reader.read_range(located)) == data
    cache.flush()
    monkeypatch.undo()
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data  # the halves are not returned
    assert objects.gets > got
    cache.flush()
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data  # cached now that there is room
    assert objects.gets == got


def test_garbled_store_never_cached(tmp_path):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    cache = ChunkCache(tmp_path / "cache", 64 << 20)
    chunks = ChunkStore(objects, SEED, cache=cache)
    located = write_chunks(chunks, os.urandom(1 << 20))
    objects.garble = True
    h, size, loc = located[0]
    with pytest.raises(CorruptChunk):
        chunks.reader.read(h, size, loc)
    cache.flush()
    assert cache.get(loc.pack, [(loc.offset, loc.length)]) == [None]


def _hammer(objects: str, cache: str, located: list, data: bytes, seed: int) -> None:
    """Reads ranges of `data`, through a small cache shared with other processes."""
    chunks = ChunkStore(LocalStore(objects), SEED, cache=ChunkCache(cache, 3 << 20))
    rng = random.Random(seed)
    for _ in range(30):
        offset = rng.randrange(len(data))
        assert b"".join(chunks.reader.read_range(located, offset, 3 << 20)) == data[offset:][: 3 << 20]
    chunks.reader.close()


def test_concurrent_processes(tmp_path):
    chunks = ChunkStore(LocalStore(tmp_path / "objects"), SEED)
    data = os.urandom(12 << 20)
    located = write_chunks(chunks, data)
    args = [(str(tmp_path / "objects"), str(tmp_path / "cache"), located, data, seed) for seed in range(4)]
    ctx = multiprocessing.get_context("spawn")  # not fork: pytest's process has threads
    procs = [ctx.Process(target=_hammer, args=a) for a in args[1:]]
    try:
        for p in procs:
            p.start()
        _hammer(*args[0])
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    # each process may overshoot by an eighth of the bound between its scans
    assert cached_bytes(ChunkCache(tmp_path / "cache", 3 << 20)) <= (3 << 20) * (1 + 4 / 8)


def test_parse_size():
    assert [parse_size(s) for s in ["0", "4096", "512M", "10G", "1.5T", "2KiB", "3mb"]] == [
        0,
        4096,
        512 << 20,
        10 << 30,
        3 << 39,
        2048,
        3 << 20,
    ]
    for bad in ["", "G", "ten", "-1G"]:
        with pytest.raises(ValueError, match="invalid size"):
            parse_size(bad)


def test_cache_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PFS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PFS_CACHE_SIZE", "2G")
    a, b = cache_for("s3://bucket/a"), cache_for("gs://bucket/a")
    assert a.max_bytes == 2 << 30 and a.dir.parent == tmp_path and a.dir != b.dir
    assert cache_for("s3://bucket/a").dir == a.dir  # the same store, the same cache
    assert cache_for("file:///var/pfs/chunks") is None  # local stores are not cached
    monkeypatch.setenv("PFS_CACHE_SIZE", "0")
    assert cache_for("s3://bucket/a") is None


def test_writes_never_hold_readers_up(tmp_path, monkeypatch):
    cache = ChunkCache(tmp_path, 1 << 30, behind=25_000)
    writing = threading.Event()
    release = threading.Event()
    real_write = cache._write

    def slow_write(*args):  # a disk that has stalled
        writing.set()
        release.wait(10)
        real_write(*args)

    monkeypatch.setattr(cache, "_write", slow_write)
    for i in range(10):
        cache.put(pack(i), 0, block(i))  # returns at once; beyond 25,000 bytes behind, skipped
    assert writing.wait(10)
    release.set()
    cache.flush()
    cached = [i for i in range(10) if cache.get(pack(i), [(0, 10_000)]) != [None]]
    assert cached == [0, 1]
