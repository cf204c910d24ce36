"""ChunkCache: a bounded on-disk cache of chunks, for clients that read from a far object store.

Chunks never change, so a cached chunk is good forever: no invalidation, only eviction. Each chunk
is a file named by its hash, written to a temporary name and renamed into place, so concurrent
readers (threads or processes sharing the directory) see a whole file or none. The reader
re-hashes every chunk it gets from here and drops one that does not match (a torn write after a
crash, a disk error), so the cache needs no fsync and no index to stay correct.

Chunks are written behind the reader by a thread of their own; when the disk falls behind by more
than `behind` bytes, further chunks are not cached, so that the cache never slows a reader down.

Eviction is least recently used: a hit touches the file's mtime, and when the cache outgrows its
bound, the oldest files are deleted. The size is learned by scanning the directory when this process
first adds a chunk and again after every eighth of the bound it adds, so processes sharing a
directory notice each other's additions; between scans each may overshoot by that eighth.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_LOW_WATER = 0.9  # evict down to this fraction of the bound, so eviction runs in batches
_STALE_TMP = 3600  # seconds after which a temporary file is a crashed writer's leftover


class ChunkCache:
    """Chunks by hash under `directory`, about `max_bytes` of them at most; `behind` bounds the
    bytes waiting to be written."""

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
        self._queue: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
        # the writer's alone:
        self._used: int | None = None  # bytes in the cache at the last scan, plus those added
        self._added = 0  # bytes added since the last scan

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.dir)!r}, {self.max_bytes})"

    def _path(self, h: bytes) -> Path:
        name = h.hex()
        return self.dir / name[:2] / name

    def get(self, h: bytes) -> bytes | None:
        """The cached bytes of chunk `h`, unverified, or None."""
        path = self._path(h)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return data

    def prefetch(self, hashes: list[bytes]) -> None:
        """Ask the disk for the cached files of `hashes` at once: chunk files are small, so
        reading them one by one would get little of the kernel's read-ahead."""
        for h in hashes:
            try:
                fd = os.open(self._path(h), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def drop(self, h: bytes) -> None:
        """Removes chunk `h` (its cached bytes turned out wrong)."""
        with contextlib.suppress(OSError):
            self._path(h).unlink()

    def put(self, h: bytes, data: bytes) -> None:
        """Caches chunk `h`, whose `data` the caller verified, in the background, unless the writes
        are `behind` already."""
        with self._lock:
            if self._queued + len(data) > self._behind:
                return
            self._queued += len(data)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_behind, name="pfs-cache-writer", daemon=True
                )
                self._writer.start()
        self._queue.put((h, data))

    def flush(self) -> None:
        """Waits until every chunk put so far is written (or failed to be)."""
        self._queue.join()

    def _write_behind(self) -> None:
        while True:
            h, data = self._queue.get()
            try:
                self._write(h, data)
            except Exception as exc:  # a full disk...: the cache is an optimisation
                log.warning("chunk cache %s: cannot store a chunk: %s", self.dir, exc)
            finally:
                with self._lock:
                    self._queued -= len(data)
                self._queue.task_done()

    def _write(self, h: bytes, data: bytes) -> None:
        path = self._path(h)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            path.parent.mkdir(exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._added += len(data)
        if self._used is not None:
            self._used += len(data)
        if self._used is None or self._added > self.max_bytes // 8 or self._used > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Scans the cache and deletes the least recently used files down to the low-water mark."""
        files = []
        now = time.time()
        for sub in os.scandir(self.dir):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                with contextlib.suppress(FileNotFoundError):  # another process evicted it
                    st = entry.stat(follow_symlinks=False)
                    if not entry.name.startswith("."):
                        files.append((st.st_mtime, st.st_size, entry.path))
                    elif now - st.st_mtime > _STALE_TMP:
                        os.unlink(entry.path)
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
    root = Path(os.environ.get("PFS_CACHE_DIR") or Path.home() / ".cache" / "pfs" / "chunks")
    return ChunkCache(root / hashlib.sha256(storage.encode()).hexdigest()[:16], size)
