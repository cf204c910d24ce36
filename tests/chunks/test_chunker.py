"""Content-defined chunking."""

import io
import os
import random
import threading

import pytest

from pfsfuse.chunks import MAX_SIZE, MIN_SIZE, Chunker, chunker

SEED = 0x0123456789ABCDEF


@pytest.fixture(scope="module")
def data():
    return random.Random(1).randbytes(32 << 20)


def cut(chunker, buf):
    return [bytes(c) for c in chunker.cut_buf(buf)]


def test_deterministic(data):
    chunks = cut(Chunker(SEED), data)
    assert b"".join(chunks) == data
    assert cut(Chunker(SEED), data) == chunks


def test_seed_keys_the_boundaries(data):
    assert cut(Chunker(SEED), data) != cut(Chunker(SEED + 1), data)
    assert cut(Chunker(0), data) != cut(Chunker(2**64 - 1), data)


def test_sizes_within_bounds(data):
    sizes = [len(c) for c in Chunker(SEED).cut_buf(data)]
    assert all(MIN_SIZE <= size <= MAX_SIZE for size in sizes[:-1])
    assert 0 < sizes[-1] <= MAX_SIZE
    assert 1 << 20 <= len(data) / len(sizes) <= 2 << 20


def test_edit_changes_only_nearby_chunks(data):
    chunker = Chunker(SEED)
    before = cut(chunker, data)
    for at in (len(data) // 3, len(data) // 2, len(data) - (5 << 20)):
        edited = bytearray(data)
        edited[at : at + 1024] = random.Random(at).randbytes(1024)
        after = cut(chunker, edited)
        assert b"".join(after) == edited
        assert len(set(after) - set(before)) <= 2


def test_stream_matches_buffer(data):
    chunker = Chunker(SEED)
    expected = cut(chunker, data)
    assert [bytes(c) for c in chunker.cut(io.BytesIO(data))] == expected

    class ReadOnly:
        """A stream with only read(), returning short reads like a pipe."""

        def __init__(self):
            self.pos = 0
            self.rng = random.Random(2)

        def read(self, n):
            n = min(n, self.rng.randint(1, 300_000))
            out = data[self.pos : self.pos + n]
            self.pos += len(out)
            return out

    assert [bytes(c) for c in chunker.cut(ReadOnly())] == expected


def test_empty_and_small_inputs():
    chunker = Chunker(SEED)
    assert list(chunker.cut_buf(b"")) == []
    assert list(chunker.cut(io.BytesIO())) == []
    assert cut(chunker, b"tiny") == [b"tiny"]
    assert [bytes(c) for c in chunker.cut(io.BytesIO(b"tiny"))] == [b"tiny"]
    assert cut(chunker, bytearray(b"x" * 100)) == [b"x" * 100]


@pytest.mark.parametrize("size", [0, 1, chunker.BLOCK - 1, chunker.BLOCK, chunker.BLOCK + 1, 3 * chunker.BLOCK + 12345])
def test_streams_cut_like_buffers_across_blocks(size):
    """cut() works a block at a time; its cuts must be those of the whole buffer."""
    c = Chunker(SEED)
    data = os.urandom(size)
    assert [bytes(x) for x in c.cut(io.BytesIO(data))] == [bytes(x) for x in c.cut_buf(data)]


@pytest.mark.parametrize("size", [0, 1, chunker.BLOCK - 1, chunker.BLOCK, chunker.BLOCK + 1, 3 * chunker.BLOCK + 12345])
def test_files_cut_like_buffers_across_blocks(tmp_path, size):
    """cut_file() reads the next block while it cuts one; its cuts must be those of the whole
    buffer, from the file's position on."""
    c = Chunker(SEED)
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(b"skip" + data)
    with open(path, "rb", buffering=0) as f:
        f.seek(4)
        assert [bytes(x) for x in c.cut_file(f.fileno())] == [bytes(x) for x in c.cut_buf(data)]
    # Abandoned half way, it leaves nothing behind that spoils the next cut.
    with open(path, "rb", buffering=0) as f:
        f.seek(4)
        next(iter(c.cut_file(f.fileno())), None)
        f.seek(4)
        assert [bytes(x) for x in c.cut_file(f.fileno())] == [bytes(x) for x in c.cut_buf(data)]


@pytest.mark.parametrize("layout", ["leading", "trailing", "scattered", "all"])
def test_a_sparse_files_holes_cut_as_the_zeros_they_read_as(tmp_path, layout):
    """cut_file() zeroes a sparse file's holes instead of reading them: the cuts are those of the
    bytes a read gives, wherever the holes are (from the file's position on, too)."""
    c = Chunker(SEED)
    rnd = random.Random(layout)
    size = 2 * chunker.BLOCK + 777
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.truncate(size)
        writes = {"leading": [(size - (5 << 20), 5 << 20)], "trailing": [(0, 3 << 20)], "all": []}.get(
            layout, [(rnd.randrange(size), rnd.randrange(1, 1 << 20)) for _ in range(12)]
        )
        for off, n in writes:
            f.seek(off)
            f.write(rnd.randbytes(min(n, size - off)))
    assert os.stat(path).st_blocks * 512 < size  # (the file system keeps the holes)
    data = path.read_bytes()
    for start in (0, 12345):
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            assert [bytes(x) for x in c.cut_file(f.fileno())] == cut(c, data[start:]), start


def test_a_pipe_is_cut_as_it_is_read():
    """Holes are looked for in regular files only: a pipe is read as it comes."""
    c = Chunker(SEED)
    data = random.Random(2).randbytes(chunker.BLOCK + 999)
    r, w = os.pipe()
    writer = threading.Thread(target=_write_all, args=(w, data))
    writer.start()
    try:
        assert [bytes(x) for x in c.cut_file(r)] == cut(c, data)
    finally:
        writer.join()
        os.close(r)


def _write_all(fd: int, data: bytes) -> None:
    with open(fd, "wb") as f:
        f.write(data)
