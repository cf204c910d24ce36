"""ChunkCache: a bounded on-disk cache of pack objects, for clients that read from a far object store.

The cache mirrors byte ranges of packs: a pack's cached bytes lie in one sparse file named by the
pack id, at the offsets they have in the pack, as stored there (compressed or not). A chunk's
location is therefore its address in the cache too, so the cache needs no index; and the chunks of
a file written at once, back to back in its packs, lie back to back in a few large files here, so
reading them again is a few sequential reads, which the kernel's read-ahead serves near the disk's
speed (a file per chunk scattered them over the disk, and read at half of it).

Packs never change, so cached bytes are good forever: no invalidation, only eviction. Ranges are
written in place, without fsync or renames; a reader re-hashes every chunk it gets from here
(ChunkReader does) and fetches again one that does not match: a range never written (a hole reads
as zeros), a torn write after a crash, another process writing it right now, a disk error, bit rot.
So processes sharing the directory (mounts, workers and commands of one user) need no locks, and
nothing read from the cache is returned unverified.

Ranges are written behind the reader by a thread of their own; when the disk falls behind by more
than `behind` bytes, further ranges are not cached, so that the cache never slows a reader down.
A failed write (a full disk) only loses that range.

Eviction is least recently used, a pack's file at a time: a hit touches the file's mtime, and when
the cache outgrows its bound, the oldest files are deleted. The size (blocks allocated) is learned by
scanning the directory when this process first adds bytes and again after every eighth of the bound
it adds, so processes sharing a directory notice each other's additions; between scans each may
overshoot by that eighth.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_LOW_WATER = 0.9  # evict down to this fraction of the bound, so eviction runs in batches


class ChunkCache:
    """Byte ranges of packs under `directory`, about `max_bytes` of them at most; `behind` bounds
    the bytes waiting to be written."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, behind: int = 64 << 20):
        if max_bytes <= 0:
            raise ValueError("the chunk cache needs a positive size")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self._behind = behind
        self._lock = threading.Lock()  # for the two below
        self._queued = 0  # bytes waiting to be written
        self._writer: threading.Thread | None = None  # started by the first put
        self._queue: queue.Queue[tuple[bytes, int, bytes | memoryview]] = queue.Queue()
        # the writer's alone:
        self._used: int | None = None  # bytes in the cache at the last scan, plus those added
        self._added = 0  # bytes added since the last scan

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.dir)!r}, {self.max_bytes})"

    def _path(self, pack: bytes) -> Path:
        return self.dir / pack.hex()

    def get(self, pack: bytes, ranges: list[tuple[int, int]]) -> list[bytes | None]:
        """The cached bytes of each (offset, length) range of `pack`, unverified, or None for
        those past the end of its file. A range never written reads as zeros (a hole)."""
        try:
            fd = os.open(self._path(pack), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return [None] * len(ranges)
        try:
            with contextlib.suppress(OSError):
                os.utime(fd)  # recently used
            datas = [os.pread(fd, length, offset) for offset, length in ranges]
        finally:
            os.close(fd)
        return [data if len(data) == length else None for data, (_, length) in zip(datas, ranges, strict=True)]

    def drop(self, pack: bytes) -> None:
        """Removes the cached bytes of `pack` (deleted from the store)."""
        with contextlib.suppress(OSError):
            self._path(pack).unlink()

    def put(self, pack: bytes, offset: int, data: bytes | memoryview) -> None:
        """Caches `data`, the bytes at `offset` in `pack`, which the caller verified, in the
        background, unless the writes are `behind` already."""
        with self._lock:
            if self._queued + len(data) > self._behind:
                return
            self._queued += len(data)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_behind, name="pfs-cache-writer", daemon=True)
                self._writer.start()
        self._queue.put((pack, offset, data))

    def flush(self) -> None:
        """Waits until every range put so far is written (or failed to be)."""
        self._queue.join()

    def _write_behind(self) -> None:
        while True:
            pack, offset, data = self._queue.get()
            try:
                self._write(pack, offset, data)
            except Exception as exc:  # a full disk...: the cache is an optimisation
                log.warning("chunk cache %s: cannot store a chunk: %s", self.dir, exc)
            finally:
                with self._lock:
                    self._queued -= len(data)
                self._queue.task_done()

    def _write(self, pack: bytes, offset: int, data: bytes | memoryview) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # in case it was emptied by hand
        # In place: a reader may see the range half written, and verifies it (see above).
        fd = os.open(self._path(pack), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with memoryview(data) as view:
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], offset + done)
        finally:
            os.close(fd)
        self._added += len(data)
        if self._used is not None:
            self._used += len(data)
        if self._used is None or self._added > self.max_bytes // 8 or self._used > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Scans the cache and deletes the least recently used files down to the low-water mark."""
        files = []
        for entry in os.scandir(self.dir):
            with contextlib.suppress(FileNotFoundError):  # another process evicted it
                if entry.is_dir(follow_symlinks=False):  # a file per chunk, the former layout
                    import shutil  # here only: it loads zlib, bz2 and lzma

                    shutil.rmtree(entry.path, ignore_errors=True)
                    continue
                st = entry.stat(follow_symlinks=False)
                files.append((st.st_mtime, st.st_blocks * 512, entry.path))
        used = sum(size for _, size, _ in files)
        if used > self.max_bytes:
            files.sort()
            for _, size, path in files:
                if used <= self.max_bytes * _LOW_WATER:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                used -= size
        self._used, self._added = used, 0


DEFAULT_SIZE = 10 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in "123", "512M", "10G", "1.5T" (powers of 1024; a trailing "B" or "iB" is allowed)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise ValueError(f"invalid size {text!r}: expected bytes, or a number and K, M, G, T") from None
    if number < 0:
        raise ValueError(f"invalid size {text!r}: negative")
    return int(number * _UNITS[unit])


def cache_for(storage: str) -> ChunkCache | None:
    """The chunk cache for a client of the store at URL `storage`: a directory per store under
    $PFS_CACHE_DIR (default ~/.cache/pfs/chunks), bounded by $PFS_CACHE_SIZE (default 10G; 0 turns
    it off). None for a local-directory store, which is as near as a cache."""
    size = parse_size(os.environ.get("PFS_CACHE_SIZE") or str(DEFAULT_SIZE))
    if storage.startswith("file:") or size == 0:
        return None
    import hashlib  # here only: it loads OpenSSL, which readers of a local store need not

    root = Path(os.environ.get("PFS_CACHE_DIR") or Path.home() / ".cache" / "pfs" / "chunks")
    return ChunkCache(root / hashlib.sha256(storage.encode()).hexdigest()[:16], size)
