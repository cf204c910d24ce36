"""The content of a file a mount is writing: in memory, spilled to a temporary file when large,
with the byte ranges written since the file it last stored, so that a put names only those. A
big committed file is copied on write sparsely: the copy holds what was written, and the rest
is fetched from the committed file only where something reads it."""

from __future__ import annotations

import bisect
import ctypes
import errno
import io
import itertools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from pfsfuse.api.types import MAX_CHANGED, Put
from pfsfuse.metadata.records import ChunkRef, Stat

SPILL = 8 << 20  # files larger than this are written to a temporary file, not kept in memory
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
# (chunks, i, read ahead): the data of chunks[i] (Reader.chunk_of)
FetchChunk = Callable[[Sequence[ChunkRef], int, bool], Awaitable[bytes]]


@dataclass
class Origin:
    """The committed file a sparse copy was made of, where the bytes it does not hold are."""

    content: bytes  # its content hash
    commit: str  # the commit it was copied from, where the daemon finds it again
    chunks: Sequence[ChunkRef]
    fetch: FetchChunk
    starts: list[int] = field(init=False)

    def __post_init__(self):
        self.starts = list(itertools.accumulate((c.size for c in self.chunks), initial=0))


class LocalFile:
    """The content of a file the mount is writing."""

    def __init__(self, tmpdir: str, stat: Stat):
        self._tmpdir = tmpdir
        self._buf = bytearray()  # the content until it spills to a file (_fd), then empty
        self._fd: int | None = None
        self.tmp_path: str | None = None
        self.size = 0
        self.version = 0  # bumped by every change of content or stat
        self._stat = stat
        # (path, version, op number) of the last put logged of it: a writer closing it unchanged
        # since an fsync sent it need not send it again.
        self.logged_as: tuple[str, int, int] | None = None
        self.writers = 0  # open handles that may write
        self.handles = 0  # open handles of any kind
        self.dropped = False  # no longer in the overlay: close once no handle is left
        self.logged = 0  # puts of its content logged and not sent yet: it must stay till then
        self.path = ""  # where it is in the branch
        # What an fsync sends of a big file: its content equals the stored file whose content
        # hash is `base`, except in the ranges [start, end) of `_changed`, in the order written
        # (marked after the bytes are). None: unknown, the file is sent whole. Changed only in
        # the event loop's thread, as the writes are.
        self.base: bytes | None = None
        self._changed: list[list[int]] = []
        self._sending = 0  # how many of `_changed` the put in flight lists: those are not extended
        self._resets = 0  # times `_changed` overflowed: a put built before knows nothing after
        self._sending_since = 0
        # An fsync's put sent only what changed, cut finely: the file's chunks are not put-file's,
        # so its close sends it again (whole) even if unchanged since. Set once the daemon stored
        # the put (`stored`): a put sent again after a failure is built as the first was.
        self.fine = False
        self._fine_if_stored = False
        # A sparse copy (`sparse_copy`): the ranges [start, end) of `origin` not here yet, and
        # those changed since the copy (None once too many to name: a close then needs the
        # file whole).
        self.origin: Origin | None = None
        self.holes: list[list[int]] = []
        self._touched: list[list[int]] | None = None

    @property
    def stat(self) -> Stat:
        return self._stat

    @stat.setter
    def stat(self, stat: Stat) -> None:
        self._stat = stat
        self.version += 1

    @property
    def executable(self) -> bool:
        return bool(self.stat.mode & 0o111)

    def touch(self) -> None:
        """The content changed: so did its mtime and ctime."""
        now = time.time_ns()
        self.stat = msgspec.structs.replace(self.stat, mtime=now, ctime=now)

    def pread(self, off: int, n: int) -> bytes:
        """Bytes of the content; those of a sparse copy's holes must be filled first (`fill`)."""
        if self.holes and _overlapping(self.holes, off, off + n):
            raise OSError(errno.EIO, "a read of bytes the copy does not hold yet")
        if self._fd is not None:
            return os.pread(self._fd, n, off)
        return bytes(self._buf[off : off + n])

    def pwrite(self, off: int, data: bytes) -> int:
        end = off + len(data)
        if self._fd is None and end > SPILL:
            self._spill()
        if self._fd is not None:
            n = os.pwrite(self._fd, data, off)
        else:
            if off > len(self._buf):
                self._buf.extend(bytes(off - len(self._buf)))
            self._buf[off:end] = data
            n = len(data)
        self.size = max(self.size, off + n)
        self._mark(off, off + n)
        self.touch()
        return n

    def truncate(self, size: int) -> None:
        if self._fd is None and size > SPILL:
            self._spill()
        if self._fd is not None:
            os.ftruncate(self._fd, size)
        elif size < len(self._buf):
            del self._buf[size:]
        else:
            self._buf.extend(bytes(size - len(self._buf)))
        self._mark(min(size, self.size), max(size, self.size))
        self.size = size
        self.touch()

    def allocate(self, mode: int, off: int, length: int) -> None:
        """fallocate(2) of the content, in the modes FUSE passes on: reserve space (mode 0 grows
        the file, KEEP_SIZE does not), or zero a range (PUNCH_HOLE with KEEP_SIZE, ZERO_RANGE)."""
        end = off + length
        zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)
        if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise OSError(errno.EOPNOTSUPP, "a hole is punched only with KEEP_SIZE")
        size = self.size if mode & FALLOC_FL_KEEP_SIZE else max(self.size, end)
        if self._fd is None and size > SPILL:
            self._spill()
        if self._fd is not None:
            _fallocate(self._fd, mode, off, length)
        elif zero and off < len(self._buf):
            stop = min(end, len(self._buf))  # past it, growing the buffer zeroes it
            self._buf[off:stop] = bytes(stop - off)
        if zero:
            self._mark(off, min(end, size))
        if size > self.size:
            self.truncate(size)
        elif zero and off < self.size:
            self.touch()

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix=".pfs-write-", dir=self._tmpdir)
        try:
            view = memoryview(self._buf)
            while view:  # a full disk may take part of it first
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd, self.tmp_path, self._buf = fd, path, bytearray()

    def sparse_copy(self, size: int, origin: Origin) -> None:
        """Make this a copy of the committed file `origin`, of `size` bytes, holding none of
        them yet: they are fetched where read (`fill`)."""
        self.truncate(size)
        self.origin, self.holes, self._touched = origin, [[0, size]] if size else [], []

    async def fill(self, start: int, end: int, ahead: bool = False) -> None:
        """Fetch the bytes of [start, end) that a sparse copy does not hold yet (`ahead`: and
        the chunks after them in the background, for a sequential reader)."""
        origin = self.origin
        if origin is None:
            return
        for a, b in _overlapping(self.holes, start, end):
            first = bisect.bisect_right(origin.starts, a) - 1
            for i in range(first, bisect.bisect_left(origin.starts, b)):
                data = await origin.fetch(origin.chunks, i, ahead)
                self._fill_from(origin.starts[i], data)  # what is still a hole by now

    def _fill_from(self, start: int, data: bytes) -> None:
        """Write the parts of `data`, the origin's bytes from `start`, that are holes."""
        assert self._fd is not None  # (a sparse copy is a spilled file)
        for a, b in _overlapping(self.holes, start, start + len(data)):
            view, pos = memoryview(data)[a - start : b - start], a
            while view:
                n = os.pwrite(self._fd, view, pos)
                view, pos = view[n:], pos + n
            _remove(self.holes, a, b)

    def _mark(self, start: int, end: int) -> None:
        if start >= end:
            return
        if self.origin is not None:
            _remove(self.holes, start, end)  # the writer's bytes now
            if self._touched is not None:
                _add(self._touched, start, end)
                if len(self._touched) > MAX_CHANGED:
                    self._touched = None
        changed = self._changed
        if len(changed) > self._sending and changed[-1][0] <= start <= changed[-1][1]:
            changed[-1][1] = max(changed[-1][1], end)  # sequential writes make one range
        elif len(changed) < MAX_CHANGED:
            changed.append([start, end])
        else:
            self.based_on(None)
            self._resets += 1

    def based_on(self, base: bytes | None) -> None:
        """The content is now the stored file `base` (None: unknown)."""
        self.base = base
        self._changed.clear()
        self._sending = 0

    def needs_fill(self, changes: str | None) -> bool:
        """Whether a put with `changes` (see `put`) would have the daemon read the file whole:
        a sparse copy must be filled first."""
        if not self.holes:
            return False
        if changes == "close":
            return self._touched is None
        return changes is None or self.base is None

    def put(self, path: str, changes: str | None = None) -> Put:
        """The op that stores the current content at `path`. With `changes` ("fsync" or "close"),
        a big file's put names what changed since the file it last stored, and asks for the
        content hash it stores (give that to `stored`): an fsync's touched chunks are cut finely
        (more writes are to come), a close's as put-file cuts them (so is its content hash). A
        sparse copy's close names what changed since the committed file it copies."""
        if self._fd is None:
            return Put(path, stream=io.BytesIO(bytes(self._buf)), executable=self.executable, stat=self.stat)
        if self.needs_fill(changes):
            raise OSError(errno.EIO, "a put of a sparse copy that must be filled first")
        if changes is None:
            return Put(path, local=self.tmp_path, executable=self.executable, stat=self.stat)
        self._sending, self._sending_since = len(self._changed), self._resets
        since, since_ref, ranges = self.base, None, self._changed
        if changes == "close":
            if self.holes:
                assert self.origin is not None and self._touched is not None  # (needs_fill)
                since, since_ref, ranges = self.origin.content, self.origin.commit, self._touched
            elif self.fine:  # fine chunks are not put-file's: cut the whole file
                since = None
            self._fine_if_stored = False
        else:
            self._fine_if_stored = self.fine or since is not None
        changed = [(a, b - a) for a, b in ranges] if since is not None else []
        final = changes == "close"
        return Put(
            path,
            local=self.tmp_path,
            executable=self.executable,
            stat=self.stat,
            since=since,
            since_ref=since_ref,
            changed=changed,
            final=final,
            sparse=bool(self.holes),
        )

    def stored(self, content: bytes) -> None:
        """The daemon stored the content of the last fsync's put as the file `content`."""
        self.fine = self._fine_if_stored
        if self._resets != self._sending_since:  # changes since the put went untracked
            self.based_on(None)
            return
        self.base = content
        del self._changed[: self._sending]
        self._sending = 0

    def save_as(self, dest: str) -> None:
        """Write the current content to a new file `dest` (a rescue: the daemon never got it). A
        sparse copy must be filled first."""
        if self.holes:
            raise OSError(errno.EIO, "a sparse copy that could not be filled")
        with open(dest, "xb") as out:
            if self._fd is None:
                out.write(self._buf)
                return
            done = 0
            while done < self.size:
                done += os.copy_file_range(self._fd, out.fileno(), self.size - done, done, done)

    def release(self) -> None:
        """Free the content once the file is neither in the overlay, nor open, nor to be sent."""
        if self.dropped and self.handles == 0 and self.logged == 0 and self._fd is not None:
            os.close(self._fd)
            if self.tmp_path is not None:
                os.unlink(self.tmp_path)
            self._fd = None


def _fallocate(fd: int, mode: int, off: int, length: int) -> None:
    """fallocate(2) of a spilled file (the os module has only posix_fallocate, mode 0). Where its
    file system lacks a mode, a zeroed range is written out and a reservation skipped."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if libc.fallocate(fd, mode, off, length) == 0:
        return
    err = ctypes.get_errno()
    if err != errno.EOPNOTSUPP:
        raise OSError(err, os.strerror(err))
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
        end = min(off + length, os.fstat(fd).st_size) if mode & FALLOC_FL_KEEP_SIZE else off + length
        zeros = bytes(1 << 20)
        while off < end:
            off += os.pwrite(fd, zeros[: end - off], off)


def _overlapping(ranges: list[list[int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of sorted, disjoint `ranges` within [start, end)."""
    i = max(bisect.bisect_right(ranges, [start]) - 1, 0)
    found = []
    while i < len(ranges) and ranges[i][0] < end:
        a, b = max(ranges[i][0], start), min(ranges[i][1], end)
        if a < b:
            found.append((a, b))
        i += 1
    return found


def _remove(ranges: list[list[int]], start: int, end: int) -> None:
    """Take [start, end) out of sorted, disjoint `ranges`."""
    i = max(bisect.bisect_right(ranges, [start]) - 1, 0)
    while i < len(ranges) and ranges[i][0] < end:
        a, b = ranges[i]
        if b <= start:
            i += 1
            continue
        kept = [r for r in ([a, start], [end, b]) if r[0] < r[1]]
        ranges[i : i + 1] = kept
        i += len(kept)


def _add(ranges: list[list[int]], start: int, end: int) -> None:
    """Put [start, end) into sorted, disjoint `ranges`, merged with those it meets."""
    i = bisect.bisect_left(ranges, [start])
    if i > 0 and ranges[i - 1][1] >= start:
        i -= 1
    j = i
    while j < len(ranges) and ranges[j][0] <= end:
        start, end = min(start, ranges[j][0]), max(end, ranges[j][1])
        j += 1
    ranges[i:j] = [[start, end]]
