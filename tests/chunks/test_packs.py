"""Packing chunks into objects and reading them back verified."""

import errno
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pfsfuse.chunks import (
    RAW,
    ZSTD,
    ChunkLoc,
    ChunkStore,
    CorruptChunk,
    CorruptPack,
    LocalStore,
    ObjectNotFound,
    local,
    pack_key,
    packs,
    read_pack_index,
)

SEED = 0xFEEDFACECAFEBEEF


@pytest.fixture
def chunks(tmp_path):
    return ChunkStore(LocalStore(tmp_path / "objects"), SEED)


@pytest.fixture
def any_chunks(store):
    """A ChunkStore over each backend, for the tests that read packs in every way a backend must
    serve (ranges, tails, missing objects); the others are about packing, not storage."""
    return ChunkStore(store, SEED)


def text(n, seed=0):
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def sample_chunks():
    rng = random.Random(3)
    small = [rng.randbytes(rng.randint(0, 4096)) for _ in range(500)]
    small += [text(rng.randint(1, 4096), seed=i) for i in range(500)]
    large = [rng.randbytes(3 << 20), text(4 << 20), rng.randbytes(300_000)]
    return small + large


def write_all(chunks, datas, target=1 << 20):
    """Adds every chunk, returning {hash: (data, loc)}."""
    locs = {}
    with chunks.writer(target) as writer:
        for data in datas:
            locs.update(writer.add(chunks.hash(data), data))
        locs.update(writer.flush())
    return {chunks.hash(d): (d, locs[chunks.hash(d)]) for d in datas}


def test_round_trip(chunks):
    datas = sample_chunks()
    written = write_all(chunks, datas, target=256 << 10)
    assert len({loc.pack for _, loc in written.values()}) > 3
    for h, (data, loc) in written.items():
        assert chunks.reader.read(h, len(data), loc) == data


def test_locations_returned_only_when_durable(chunks):
    datas = sample_chunks()
    writer = chunks.writer(64 << 10)
    returned = 0
    for data in datas:
        for h, loc in writer.add(chunks.hash(data), data):
            assert chunks.objects.exists(pack_key(loc.pack))
            assert not writer.pending(h)
            returned += 1
    returned += len(writer.flush())
    assert returned == len({chunks.hash(d) for d in datas})


def test_compression_only_where_it_pays(chunks):
    compressible, noise = text(1 << 20), os.urandom(1 << 20)
    written = write_all(chunks, [compressible, noise])
    _, loc = written[chunks.hash(compressible)]
    assert loc.codec == ZSTD and loc.length < len(compressible) // 2
    _, loc = written[chunks.hash(noise)]
    assert loc.codec == RAW and loc.length == len(noise)


def test_dedup_within_writer(chunks):
    data = text(100_000)
    h = chunks.hash(data)
    writer = chunks.writer()
    assert writer.add(h, data) == []
    assert writer.pending(h)
    assert writer.add(h, data) == []
    [(h1, loc)] = writer.flush()
    assert h1 == h and not writer.pending(h)
    stored = writer.bytes_stored
    assert stored == loc.length
    assert writer.add(h, data) == [] and writer.flush() == []
    assert writer.bytes_stored == stored


def test_abort_drops_pending(chunks):
    writer = chunks.writer()
    data = b"some data"
    h = chunks.hash(data)
    writer.add(h, data)
    writer.abort()
    assert not writer.pending(h)
    assert writer.flush() == []
    assert list(chunks.objects.list()) == []
    writer.add(h, data)  # dropped, so stored again
    [(h1, loc)] = writer.flush()
    assert chunks.reader.read(h, len(data), loc) == data


def test_read_pack_index(any_chunks):
    rng = random.Random(4)
    # enough tiny chunks for a trailer longer than the first tail read
    tiny = [rng.randbytes(rng.randint(1, 40)) for _ in range(8000)]
    datas = tiny + [text(200_000), os.urandom(500_000)]
    written = write_all(any_chunks, datas, target=64 << 20)
    packs = {loc.pack for _, loc in written.values()}
    assert len(packs) == 1
    index = read_pack_index(any_chunks.objects, packs.pop())
    assert len(index) == len(written)
    for h, loc, raw_size in index:
        data, expected = written[h]
        assert loc == expected and raw_size == len(data)


def pack_path(store, loc):
    return os.path.join(store.root, *pack_key(loc.pack).split("/"))


@pytest.mark.parametrize("kind", ["raw", "zstd"])
def test_corruption_detected(tmp_path, kind):
    chunks = ChunkStore(LocalStore(tmp_path), SEED)
    data = os.urandom(100_000) if kind == "raw" else text(100_000)
    h = chunks.hash(data)
    [(_, loc)] = write_all(chunks, [data]).values()
    with open(pack_path(chunks.objects, loc), "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CorruptChunk, match=f"{h.hex()}.*{loc.pack.hex()}"):
        chunks.reader.read(h, len(data), loc)


def test_wrong_size_or_hash_detected(chunks):
    data = text(10_000)
    h = chunks.hash(data)
    [(_, loc)] = write_all(chunks, [data]).values()
    with pytest.raises(CorruptChunk):
        chunks.reader.read(h, len(data) + 1, loc)
    with pytest.raises(CorruptChunk):
        chunks.reader.read(chunks.hash(b"other"), len(data), loc)
    with pytest.raises(CorruptChunk, match="codec"):
        chunks.reader.read(h, len(data), ChunkLoc(loc.pack, loc.offset, loc.length, 7))


def test_truncated_pack(tmp_path):
    chunks = ChunkStore(LocalStore(tmp_path), SEED)
    datas = [os.urandom(50_000), text(50_000, seed=1)]
    written = write_all(chunks, datas)
    _, loc = written[chunks.hash(datas[1])]
    os.truncate(pack_path(chunks.objects, loc), loc.offset + loc.length // 2)
    with pytest.raises(CorruptChunk, match="bytes short"):
        chunks.reader.read(chunks.hash(datas[1]), len(datas[1]), loc)
    with pytest.raises(CorruptPack, match="footer"):
        read_pack_index(chunks.objects, loc.pack)


def test_missing_pack(any_chunks):
    loc = ChunkLoc(os.urandom(16), 0, 10, RAW)
    with pytest.raises(ObjectNotFound):
        any_chunks.reader.read(any_chunks.hash(b"x"), 1, loc)
    with pytest.raises(ObjectNotFound):
        read_pack_index(any_chunks.objects, loc.pack)


def test_concurrent_readers(chunks):
    written = list(write_all(chunks, sample_chunks()).items())

    def read_all(seed):
        # a sample per thread: a request costs milliseconds on an emulator
        for h, (data, loc) in random.Random(seed).sample(written, 100):
            assert chunks.reader.read(h, len(data), loc) == data

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read_all, range(16)))


class SlowStore(LocalStore):
    """Counts puts in flight, each taking a while; fails puts while `fail` is set."""

    def __init__(self, root):
        super().__init__(root)
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.fail = False

    def _put(self, key, data, durable):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.02)
            if self.fail:
                raise OSError("injected upload failure")
            super()._put(key, data, durable)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_uploads_overlap_but_stay_bounded(tmp_path):
    store = SlowStore(tmp_path)
    chunks = ChunkStore(store, SEED)
    datas = [os.urandom(100_000) for _ in range(40)]
    written = write_all(chunks, datas, target=150_000)
    assert store.max_in_flight == packs._MAX_UPLOADS
    assert len(written) == 40


def test_upload_failure_drops_pending(tmp_path):
    store = SlowStore(tmp_path)
    chunks = ChunkStore(store, SEED)
    writer = chunks.writer(1000)
    store.fail = True
    datas = [os.urandom(2000) for _ in range(3)]
    with pytest.raises(OSError, match="injected"):
        for data in datas:
            writer.add(chunks.hash(data), data)
        writer.flush()
    assert not any(writer.pending(chunks.hash(d)) for d in datas)
    store.fail = False
    locs = []
    for data in datas:  # dropped chunks are accepted again
        locs += writer.add(chunks.hash(data), data)
    locs += writer.flush()
    assert {h for h, _ in locs} == {chunks.hash(d) for d in datas}


def test_pack_key():
    assert pack_key(bytes(range(16))) == "packs/00/000102030405060708090a0b0c0d0e0f"
    assert pack_key(b"\xab" * 16) == "packs/ab/" + "ab" * 16


def test_chunk_store_end_to_end(any_chunks):
    data = os.urandom(6 << 20) + text(6 << 20)
    refs = []
    with any_chunks.writer() as writer:
        locs = {}
        for chunk in any_chunks.chunker.cut_buf(data):
            h = any_chunks.hash(chunk)
            refs.append((h, len(chunk)))
            locs.update(writer.add(h, chunk))
        locs.update(writer.flush())
    assert b"".join(any_chunks.reader.read(h, n, locs[h]) for h, n in refs) == data
    located = [(h, n, locs[h]) for h, n in refs]
    assert b"".join(any_chunks.reader.read_range(located)) == data
    assert b"".join(any_chunks.reader.read_range(located, 1000, 7 << 20)) == data[1000 : 1000 + (7 << 20)]
    assert str(SEED) not in repr(any_chunks.hash)


class CountingStore(LocalStore):
    """Records the ranges got."""

    def __init__(self, root):
        super().__init__(root)
        self.gets = []

    def _get(self, key, offset, length):
        self.gets.append((key, offset, length))
        return super()._get(key, offset, length)

    def _view(self, key, offset, length):
        self.gets.append((key, offset, length))
        return super()._view(key, offset, length)


def test_read_range_fetches_adjacent_chunks_together(tmp_path):
    chunks = ChunkStore(CountingStore(tmp_path), SEED)
    chunks.reader = packs.ChunkReader(chunks.objects, chunks.hash)  # as for an object store
    data = os.urandom(40 << 20)
    pieces = list(chunks.chunker.cut_buf(data))
    written = write_all(chunks, pieces, target=16 << 20)
    located = [(h, len(d), loc) for h, (d, loc) in written.items()]
    assert len({loc.pack for _, _, loc in located}) == 3
    assert b"".join(chunks.reader.read_range(located)) == data
    # one request per run of adjacent chunks of at most _RUN_BYTES, never across packs
    assert len(chunks.objects.gets) < len(pieces) / 4
    assert all(length <= packs._RUN_BYTES for _, _, length in chunks.objects.gets)
    chunks.objects.gets.clear()
    assert b"".join(chunks.reader.read_range(located, 5 << 20, 100)) == data[5 << 20 :][:100]
    assert len(chunks.objects.gets) == 1


def test_local_store_reads_chunks_as_views_of_its_files(tmp_path):
    # A local pack is mapped, not copied: big chunks come back as views of one mapping per run,
    # which outlive the pack's file (a garbage collection may delete it while they are used).
    chunks = ChunkStore(CountingStore(tmp_path), SEED)
    big = os.urandom(20 << 20)
    datas = list(chunks.chunker.cut_buf(big))
    written = write_all(chunks, datas, target=16 << 20)
    located = [(h, len(d), loc) for h, (d, loc) in written.items()]
    pieces = list(chunks.reader.read_range(located))
    assert b"".join(pieces) == big
    assert all(isinstance(p, memoryview) and p.readonly for p in pieces)
    assert len(chunks.objects.gets) == 2  # a run per pack
    for pack in {loc.pack for _, _, loc in located}:
        chunks.objects.delete(pack_key(pack))
    assert b"".join(pieces) == big
    with pytest.raises(ObjectNotFound):
        list(chunks.reader.read_range(located))
    # Small ranges are copied: a mapping each would cost more than the copy.
    chunks.objects.put("small", b"tiny object")
    assert chunks.objects.view("small", 2, 3) == b"ny "
    assert isinstance(chunks.objects.view("small", 2, 3), bytes)


def test_local_views_of_short_packs_and_without_mappings(tmp_path, monkeypatch):
    chunks = ChunkStore(LocalStore(tmp_path), SEED)
    data = os.urandom(3 << 20)
    h = chunks.hash(data)
    loc = write_all(chunks, [data])[h][1]
    assert isinstance(chunks.reader.read(h, len(data), loc), memoryview)

    # Out of mappings (vm.max_map_count): the range is copied instead.
    def no_mappings(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(local.mmap, "mmap", no_mappings)
    assert chunks.reader.read(h, len(data), loc) == data
    monkeypatch.undo()
    # A pack cut short is mapped only as far as it goes: a clear error, not SIGBUS.
    os.truncate(pack_path(chunks.objects, loc), loc.offset + loc.length // 2)
    with pytest.raises(CorruptChunk, match="bytes short"):
        chunks.reader.read(h, len(data), loc)


def test_pack_whose_trailer_outgrows_its_buffer(chunks, monkeypatch):
    # Many tiny chunks make a trailer longer than the room left in the pack's buffer: it grows.
    monkeypatch.setattr(packs, "MAX_CHUNK", 64)
    datas = [b"%d" % i for i in range(20_000)]
    written = write_all(chunks, datas, target=4096)
    pack_ids = {loc.pack for _, loc in written.values()}
    assert sum(len(read_pack_index(chunks.objects, p)) for p in pack_ids) == len(datas)
    located = [(h, len(d), loc) for h, (d, loc) in written.items()]
    assert b"".join(chunks.reader.read_range(located)) == b"".join(datas)
