"""The content of a file a mount is writing: in memory, spilled to a temporary file when large,
with the byte ranges written since the file it last stored, so that a put names only those."""

from __future__ import annotations

import ctypes
import errno
import io
import os
import tempfile
import time

import msgspec

from pfsfuse.api.types import MAX_CHANGED, Put
from pfsfuse.metadata.records import Stat

SPILL = 8 << 20  # files larger than this are written to a temporary file, not kept in memory
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10


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
        # so its close sends it again (whole) even if unchanged since.
        self.fine = False

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

    def _mark(self, start: int, end: int) -> None:
        if start >= end:
            return
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

    def put(self, path: str, changes: str | None = None) -> Put:
        """The op that stores the current content at `path`. With `changes` ("fsync" or "close"),
        a big file's put names what changed since the file it last stored, and asks for the
        content hash it stores (give that to `stored`): an fsync's touched chunks are cut finely
        (more writes are to come), a close's as put-file cuts them (so is its content hash)."""
        if self._fd is None:
            return Put(path, stream=io.BytesIO(bytes(self._buf)), executable=self.executable, stat=self.stat)
        if changes is None:
            return Put(path, local=self.tmp_path, executable=self.executable, stat=self.stat)
        self._sending, self._sending_since = len(self._changed), self._resets
        since = self.base
        if changes == "close":
            if self.fine:  # fine chunks are not put-file's: cut the whole file
                since = None
            self.fine = False
        else:
            self.fine = self.fine or since is not None
        changed = [(a, b - a) for a, b in self._changed] if since is not None else []
        final = changes == "close"
        return Put(
            path,
            local=self.tmp_path,
            executable=self.executable,
            stat=self.stat,
            since=since,
            changed=changed,
            final=final,
        )

    def stored(self, content: bytes) -> None:
        """The daemon stored the content of the last fsync's put as the file `content`."""
        if self._resets != self._sending_since:  # changes since the put went untracked
            self.based_on(None)
            return
        self.base = content
        del self._changed[: self._sending]
        self._sending = 0

    def save_as(self, dest: str) -> None:
        """Write the current content to a new file `dest` (a rescue: the daemon never got it)."""
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
