"""LocalStore: objects as files under a directory (the default store)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit

from .objects import ObjectNotFound, ObjectStore, check_key, retrying

_TEMP_ERRNOS = frozenset({errno.EINTR, errno.EAGAIN})
_DIRECT_ALIGN = 4096  # O_DIRECT wants buffer address, file offset and length aligned to this
_NOT_THERE = (FileNotFoundError, NotADirectoryError)
_MAP_MIN = 256 << 10  # smaller ranges are copied: a mapping each would cost more than the copy


class LocalStore(ObjectStore):
    """Objects as files under `root`, key 'a/b' at root/a/b.

    put writes a temporary file next to the target, fsyncs it and renames it over the target, so
    readers and crashes never see part of an object. Temporary names start with '.', which keys
    cannot, so they are never listed or mistaken for objects.

    A file is never changed once it has its name, which lets view map it: a chunk is then read
    from the page cache without a copy, as Git reads its packs. (The price is Git's too: a disk
    error under a mapping is SIGBUS, not EIO.)

    Large objects are written with O_DIRECT when their buffer is page-aligned (as PackWriter's
    are): the disk reads them straight from our memory. Copying them into the page cache instead
    costs more CPU than chunking them, and the chunks are seldom read right after being written.
    """

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.url = "file://" + quote(self.root)

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        parts = urlsplit(url)
        local = parts.netloc in ("", "localhost") and parts.path.startswith("/")
        if parts.scheme != "file" or not local:
            raise ValueError(f"unsupported storage URL {url!r}: expected file:///absolute/path")
        return cls(unquote(parts.path))

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    def is_temp_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError) and exc.errno in _TEMP_ERRNOS

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _open(self, key: str) -> tuple[int, int]:
        """A descriptor of the object's file, and its size."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except _NOT_THERE:
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ObjectNotFound(f"{self.url}: no object {key!r}")
        return fd, st.st_size

    @retrying
    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        fd, size = self._open(key)
        try:
            start = max(size + offset, 0) if offset < 0 else offset
            end = size if length is None else min(start + length, size)
            return _pread_all(fd, start, end - start)
        finally:
            os.close(fd)

    def view(self, key: str, offset: int, length: int) -> bytes | memoryview:
        if length < _MAP_MIN:
            return self.get(key, offset, length)
        return self._view(check_key(key), offset, length)

    @retrying
    def _view(self, key: str, offset: int, length: int) -> bytes | memoryview:
        fd, size = self._open(key)
        try:
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            end = min(offset + length, size)
            if end <= offset:
                return b""
            # Reading all of it is the plan: let the disk have it all at once, not a fault at a
            # time. (fadvise, not madvise: Python holds the GIL through madvise.)
            os.posix_fadvise(fd, offset, end - offset, os.POSIX_FADV_WILLNEED)
            try:
                mapping = mmap.mmap(fd, end - start, prot=mmap.PROT_READ, offset=start)
            except OSError as e:
                if e.errno != errno.ENOMEM:  # out of mappings (vm.max_map_count): copy instead
                    raise
                return _pread_all(fd, offset, end - offset)
        finally:
            os.close(fd)
        # The view keeps the mapping, which is unmapped when the last view of it goes.
        return memoryview(mapping)[offset - start :]

    @retrying
    def _put(self, key: str, data: bytes | memoryview, durable: bool) -> None:
        path = self._path(key)
        directory, name = os.path.split(path)
        self._make_dirs(directory)
        tmp = os.path.join(directory, f".{name}.{os.urandom(8).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(data).cast("B")
                _write_all(fd, view[_write_direct(fd, view) :])
                # Deferred objects are flushed by a later sync of many at once: an fsync per
                # object right away halves the disk's throughput.
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if durable:
            _fsync_dir(directory)

    @retrying
    def sync(self, keys: list[str]) -> None:
        directories = set()
        for key in keys:
            path = self._path(check_key(key))
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            directories.add(os.path.dirname(path))
        for directory in directories:
            _fsync_dir(directory)

    @retrying
    def _exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.stat(self._path(key)).st_mode)
        except _NOT_THERE:
            return False

    @retrying
    def _delete(self, key: str) -> None:
        with contextlib.suppress(*_NOT_THERE, IsADirectoryError):
            os.unlink(self._path(key))

    def _list(self, prefix: str) -> Iterator[str]:
        directory, _, _ = prefix.rpartition("/")
        if directory:
            return self._walk(self._path(directory), directory + "/", prefix)
        return self._walk(self.root, "", prefix)

    def _walk(self, path: str, key_prefix: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except _NOT_THERE:
            return
        for entry in entries:
            key = key_prefix + entry.name
            if entry.name.startswith(".") or not key.startswith(prefix):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(entry.path, key + "/", prefix)
            elif entry.is_file(follow_symlinks=False):
                yield key

    def _make_dirs(self, directory: str) -> None:
        # A new directory is durable only once its parent is fsynced; without that a crash could
        # lose it together with objects already reported as stored in it.
        if os.path.isdir(directory):
            return
        parent = os.path.dirname(directory)
        self._make_dirs(parent)
        with contextlib.suppress(FileExistsError):  # a concurrent put made it
            os.mkdir(directory)
        _fsync_dir(parent)


def _pread_all(fd: int, offset: int, n: int) -> bytes:
    parts = []
    while n > 0:
        part = os.pread(fd, n, offset)
        if not part:  # the file shrank while we read
            break
        parts.append(part)
        offset += len(part)
        n -= len(part)
    return b"".join(parts)


def _write_direct(fd: int, view: memoryview) -> int:
    """Writes the longest aligned prefix of `view` bypassing the page cache, if the file system
    and the buffer's alignment allow; returns how many bytes it wrote (0 if it could not)."""
    n = len(view) - len(view) % _DIRECT_ALIGN
    if n < 16 * _DIRECT_ALIGN or not hasattr(os, "O_DIRECT"):
        return 0
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return 0
    done = 0
    try:
        while done < n:
            done += os.write(fd, view[done:n])
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not aligned; the caller writes the rest buffered
            raise
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return done


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
