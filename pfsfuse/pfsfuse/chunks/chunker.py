"""Content-defined chunking (FastCDC): an edit changes only the chunks around it."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyfastcdc import BinaryStreamReader

MIN_SIZE = 256 << 10
AVG_SIZE = 1 << 20  # pyfastcdc's avg_size; cuts are sought after MIN_SIZE, so the mean is ~1.25 MiB
MAX_SIZE = 4 << 20
# Fine chunks: what an fsync of a few small writes into a big file cuts the chunks it touched
# into, so that the next fsync there re-cuts tens of KiB, not a whole chunk.
FINE_MIN_SIZE = 4 << 10
FINE_AVG_SIZE = 16 << 10
FINE_MAX_SIZE = 64 << 10
BLOCK = 32 << 20  # streams are cut a block at a time, in place


class Chunker:
    """Cuts data into chunks of MIN_SIZE to MAX_SIZE bytes (the last one may be shorter) at
    content-defined boundaries, chosen by a gear table keyed with the store's seed. Thread-safe."""

    def __init__(self, seed: int):
        # Loaded here, not at import: a client that only reads (get-file) never cuts, and each
        # extension module loaded costs its start-up a disk read when the page cache is cold.
        from pyfastcdc import FastCDC

        gear = _gear_seed(seed)
        self._cdc = FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, normalized_chunking=1, seed=gear)
        self._fine = FastCDC(
            FINE_AVG_SIZE, min_size=FINE_MIN_SIZE, max_size=FINE_MAX_SIZE, normalized_chunking=1, seed=gear
        )
        self._buffers = threading.local()

    def cut(self, stream: BinaryStreamReader, fine: bool = False) -> Generator[memoryview, None, None]:
        """The chunks of a binary stream (anything with readinto or read); nothing if it is empty.

        Each chunk is a view of a buffer that later chunks overwrite: use or copy it before asking
        for the next one. `fine` cuts chunks of FINE_MIN_SIZE to FINE_MAX_SIZE bytes.
        """
        # A cut depends only on the bytes from its chunk's start, so cutting a block in place
        # gives the stream's cuts, except that the block's last chunk may end only because the
        # block does: carry it into the next block. Small streams fit one read.
        first = _read_up_to(stream, BLOCK)
        if len(first) < BLOCK:
            yield from self.cut_buf(first, fine)
            return
        buf = getattr(self._buffers, "free", None) or bytearray(BLOCK + MAX_SIZE)
        self._buffers.free = None  # in use: a nested cut in this thread gets its own
        try:
            view = memoryview(buf)
            view[:BLOCK] = first
            filled, eof = BLOCK, False
            while True:
                if not eof:
                    filled += _fill(stream, view[filled:])
                    eof = filled < len(buf)
                last = None
                for chunk in self.cut_buf(view[:filled], fine):
                    if last is not None:
                        yield last
                    last = chunk
                if eof:
                    if last is not None:
                        yield last
                    return
                # Move the unfinished last chunk to the front and read on behind it.
                assert last is not None  # a full buffer cuts into at least one chunk
                tail = len(last)
                view[:tail] = view[filled - tail : filled]
                filled = tail
        finally:
            self._buffers.free = buf

    def cut_file(self, fd: int) -> Iterator[memoryview]:
        """The chunks of an open file from its position on, as `cut` gives them. Each block is
        read in the background while the one before is cut: reading costs about as much as
        cutting. Each chunk is valid until the next one is asked for, as with `cut`."""
        # Two buffers take turns; blocks land after MAX_SIZE bytes of room for the unfinished
        # last chunk of the block before, which is carried in front of them.
        bufs = getattr(self._buffers, "pair", None) or (bytearray(MAX_SIZE + BLOCK), bytearray(MAX_SIZE + BLOCK))
        self._buffers.pair = None  # in use: a nested cut in this thread gets its own
        views = [memoryview(b) for b in bufs]
        try:
            n = _fill_fd(fd, views[0][MAX_SIZE:])
            if n < BLOCK:  # small files: one read, no thread
                yield from self.cut_buf(views[0][MAX_SIZE : MAX_SIZE + n])
                return
            # Leaving the pool waits for a read in flight, so the buffers are free again after.
            with ThreadPoolExecutor(1, thread_name_prefix="pfs-read-ahead") as pool:
                cur, start, end = 0, MAX_SIZE, MAX_SIZE + n
                while True:
                    ahead = None if n < BLOCK else pool.submit(_fill_fd, fd, views[1 - cur][MAX_SIZE:])
                    last = None
                    for chunk in self.cut_buf(views[cur][start:end]):
                        if last is not None:
                            yield last
                        last = chunk
                    if ahead is None:
                        if last is not None:
                            yield last
                        return
                    n = ahead.result()
                    assert last is not None  # a full buffer cuts into at least one chunk
                    tail = len(last)
                    views[1 - cur][MAX_SIZE - tail : MAX_SIZE] = last
                    cur, start, end = 1 - cur, MAX_SIZE - tail, MAX_SIZE + n
        finally:
            self._buffers.pair = bufs

    def cut_buf(self, buf: bytes | bytearray | memoryview, fine: bool = False) -> Iterator[memoryview]:
        """The chunks of a buffer, as views into it (no copies); nothing if it is empty."""
        for chunk in (self._fine if fine else self._cdc).cut_buf(memoryview(buf).cast("B")):
            yield chunk.data


def _fill(stream, view: memoryview) -> int:
    """Reads into `view` until it is full or the stream ends; returns the bytes read."""
    total = 0
    readinto = getattr(stream, "readinto", None)
    while total < len(view):
        if readinto is not None:
            n = readinto(view[total:])
        else:
            piece = stream.read(len(view) - total)
            n = len(piece)
            view[total : total + n] = piece
        if not n:
            break
        total += n
    return total


def _fill_fd(fd: int, view: memoryview) -> int:
    """Reads into `view` until it is full or the file ends; returns the bytes read. The holes of
    a sparse file (`truncate -s 10G`) are zeroed here, not read: reading a hole fills the page
    cache with zeros, which costs several times what cutting them does."""
    st = os.fstat(fd)
    sparse = stat.S_ISREG(st.st_mode) and st.st_blocks * 512 < st.st_size
    total = 0
    while total < len(view):
        hole, n = _extent(fd, len(view) - total) if sparse else (False, len(view) - total)
        if hole:
            _zero(view[total : total + n])
            os.lseek(fd, n, os.SEEK_CUR)
        else:
            n = os.readv(fd, [view[total : total + n]])
            if not n:
                break
        total += n
    return total


def _extent(fd: int, most: int) -> tuple[bool, int]:
    """What a regular file holds from its position on, up to `most` bytes: (True, n) for a hole
    of n bytes, (False, n) for n bytes of data (or the end, where a read says so). Its end is
    looked up now, not taken from an earlier stat: a file that shrank is read to its new end."""
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        if pos >= end:
            return False, most
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            data = end  # no data after `pos`: a hole to the end
        if data > pos:
            return True, min(most, data - pos)
        try:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            hole = pos + most  # the file shrank since: the read finds its end
        return False, min(most, hole - pos)
    finally:
        os.lseek(fd, pos, os.SEEK_SET)


_ZEROS = bytes(1 << 20)


def _zero(view: memoryview) -> None:
    for start in range(0, len(view), len(_ZEROS)):
        piece = view[start : start + len(_ZEROS)]
        piece[:] = _ZEROS[: len(piece)]


def _read_up_to(stream, n: int) -> bytes:
    parts, total = [], 0
    while total < n:
        piece = stream.read(n - total)
        if not piece:
            break
        parts.append(piece)
        total += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _gear_seed(seed: int) -> int:
    import hashlib  # here, like pyfastcdc above: it loads OpenSSL, which readers need not

    # Chunk boundaries are visible to clients, so they must not reveal the secret store seed: derive
    # the gear seed one-way from it. pyfastcdc takes 1..2**63-1 (0 selects its unkeyed table).
    digest = hashlib.blake2b(seed.to_bytes(8, "big"), digest_size=8, person=b"pfs-gear").digest()
    return int.from_bytes(digest, "big") >> 1 or 1
