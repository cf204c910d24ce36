"""The on-disk chunk cache, alone and under a ChunkReader."""

import multiprocessing
import os
import threading
import time

import pytest
import xxhash
from helpers import write_chunks

from pfsfuse.chunks import ChunkCache, ChunkStore, CorruptChunk, LocalStore, ObjectStore, cache_for
from pfsfuse.chunks.cache import parse_size

SEED = 0x5EED


def chunk(i: int, size: int = 10_000) -> tuple[bytes, bytes]:
    data = i.to_bytes(4, "big") * (size // 4)
    return xxhash.xxh3_128_digest(data, seed=SEED), data


def cached_bytes(cache: ChunkCache) -> int:
    return sum(f.stat().st_size for f in cache.dir.rglob("*") if f.is_file())


def test_put_get_drop(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 20)
    h, data = chunk(1)
    assert cache.get(h) is None
    cache.put(h, data)
    cache.flush()
    assert cache.get(h) == data
    cache.drop(h)
    assert cache.get(h) is None
    cache.drop(h)  # dropping a missing chunk is fine


def test_bounded_and_least_recently_used_evicted(tmp_path):
    cache = ChunkCache(tmp_path, 100_000)
    keep, keep_data = chunk(0)
    cache.put(keep, keep_data)
    cache.flush()
    for i in range(1, 40):
        h, data = chunk(i)
        cache.put(h, data)
        cache.flush()
        # the chunk read all along stays; the mtimes need to differ
        time.sleep(0.002)
        assert cache.get(keep) == keep_data
        assert cached_bytes(cache) <= 100_000
    assert cache.get(chunk(1)[0]) is None  # long unused: evicted
    assert cache.get(chunk(39)[0]) is not None


def test_survives_restart(tmp_path):
    h, data = chunk(7)
    cache = ChunkCache(tmp_path, 1 << 20)
    cache.put(h, data)
    cache.flush()
    assert ChunkCache(tmp_path, 1 << 20).get(h) == data


def test_failed_write_is_not_an_error(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 20)
    h, data = chunk(1)
    (tmp_path / h.hex()[:2]).write_bytes(b"")  # a file where its directory should be
    cache.put(h, data)
    cache.flush()
    assert cache.get(h) is None
    cache.put(*chunk(2))  # the writer goes on
    cache.flush()
    assert cache.get(chunk(2)[0]) == chunk(2)[1]


def test_leftover_temporary_files_removed(tmp_path):
    cache = ChunkCache(tmp_path, 1 << 20)
    (tmp_path / "ab").mkdir()
    stale = tmp_path / "ab" / ".abcd.1.2.tmp"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 7200,) * 2)
    fresh = tmp_path / "ab" / ".abce.1.2.tmp"  # another process writing now
    fresh.write_bytes(b"y")
    cache.put(*chunk(1))  # the first put scans the cache
    cache.flush()
    assert not stale.exists() and fresh.exists()


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


def test_damaged_cache_entry_dropped_and_fetched_again(tmp_path):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    cache = ChunkCache(tmp_path / "cache", 64 << 20)
    chunks = ChunkStore(objects, SEED, cache=cache)
    data = os.urandom(8 << 20)
    located = write_chunks(chunks, data)
    assert len(located) > 3
    assert b"".join(chunks.reader.read_range(located)) == data
    cache.flush()
    h = located[1][0]
    path = cache._path(h)
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF
    path.write_bytes(damaged)
    cache._path(located[2][0]).write_bytes(b"short")
    got = objects.gets
    assert b"".join(chunks.reader.read_range(located)) == data
    # the two damaged chunks only, fetched together if in the same pack
    assert objects.gets - got == len({located[1][2].pack, located[2][2].pack})
    cache.flush()
    assert cache.get(h) == chunks.reader.read(*located[1])  # cached again, whole


def test_garbled_store_never_cached(tmp_path):
    objects = CountingStore(LocalStore(tmp_path / "objects"))
    cache = ChunkCache(tmp_path / "cache", 64 << 20)
    chunks = ChunkStore(objects, SEED, cache=cache)
    located = write_chunks(chunks, os.urandom(1 << 20))
    objects.garble = True
    h, size, loc = located[0]
    with pytest.raises(CorruptChunk):
        chunks.reader.read(h, size, loc)
    assert cache.get(h) is None


def _hammer(directory: str, seed: int) -> None:
    cache = ChunkCache(directory, 300_000)
    for i in range(200):
        h, data = chunk((i * 7 + seed) % 60)
        got = cache.get(h)
        assert got is None or got == data
        if got is None:
            cache.put(h, data)
    cache.flush()


def test_concurrent_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # not fork: pytest's process has threads
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), seed)) for seed in range(3)]
    for p in procs:
        p.start()
    _hammer(str(tmp_path), 3)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cache = ChunkCache(tmp_path, 300_000)
    for i in range(60):
        h, data = chunk(i)
        assert cache.get(h) in (None, data)
    # each process may overshoot by an eighth of the bound between its scans
    assert cached_bytes(cache) <= 300_000 * (1 + 4 / 8)


def test_parse_size():
    assert [parse_size(s) for s in ["0", "4096", "512M", "10G", "1.5T", "2KiB", "3mb"]] == [
        0, 4096, 512 << 20, 10 << 30, 3 << 39, 2048, 3 << 20,
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

    def slow_write(h, data):  # a disk that has stalled
        writing.set()
        release.wait(10)
        real_write(h, data)

    monkeypatch.setattr(cache, "_write", slow_write)
    for i in range(10):
        cache.put(*chunk(i))  # returns at once; beyond 25,000 bytes behind, chunks are skipped
    assert writing.wait(10)
    release.set()
    cache.flush()
    cached = [i for i in range(10) if cache.get(chunk(i)[0]) is not None]
    assert cached == [0, 1]
