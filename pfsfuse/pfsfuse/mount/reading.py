"""Reading committed files: their chunks, fetched ahead of a sequential reader in the background,
each fetched once however many readers want it."""

from __future__ import annotations

import errno
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from pfsfuse.api.types import DirNames
from pfsfuse.metadata.errors import DataLoss
from pfsfuse.metadata.records import ChunkRef, FileNode
from pfsfuse.mount.boundary import fail
from pfsfuse.mount.inodes import Inode
from pfsfuse.mount.localfile import LocalFile
from pfsfuse.mount.resolve import Framed, Ref
from pfsfuse.mount.trees import Trees

log = logging.getLogger("pfsfuse.mount")

AHEAD = 32  # chunks read ahead of a sequential reader
FETCH_BATCH = 4  # chunks fetched by one worker thread: each hand-off to a thread costs CPU
LOCATE_BATCH = 4096  # chunk locations asked for at once when a file is opened
# A listed directory's small files (of one chunk) are fetched ahead, so that a copy of the
# directory (cp -r, rsync, tar) reads them from the cache: a window of them when it is listed,
# the next window once the reader is halfway through it (a listing alone, ls or find, costs one
# window).
LISTED_SMALL = 256 << 10  # at most this big a file
LISTED_WINDOW = 256  # chunks, and at most LISTED_WINDOW_BYTES of them
LISTED_WINDOW_BYTES = 4 << 20
LISTED_BATCH = 64  # chunks fetched by one worker thread; a reader waits for its whole batch
# Listed entries waiting for a reader to reach their window, newest listings kept: a page of a
# big directory is a listing of its own, and each waiting page holds its nodes alive.
LISTED_PENDING = 1 << 16


@dataclass(slots=True)
class _Listed:
    """A listed page's entries from `at` on: what is left to look at for small files, `chunk(i)`
    being the i-th entry's chunk if it is a file of one chunk. Looked at a window at a time, so
    that a listing nobody copies (ls, find) costs one window's scan."""

    count: int
    chunk: Callable[[int], ChunkRef | None]
    at: int = 0

    def window(self) -> list[ChunkRef]:
        """The next window's chunks: the small files' from `at` on."""
        found: dict[bytes, ChunkRef] = {}
        size, at = 0, self.at
        while at < self.count and len(found) < LISTED_WINDOW and size < LISTED_WINDOW_BYTES:
            c = self.chunk(at)
            at += 1
            if c is not None and c.size <= LISTED_SMALL and c.hash not in found:
                found[c.hash] = c
                size += c.size
        self.at = at
        return list(found.values())

    def first(self) -> ChunkRef | None:
        """The next small file's chunk, `at` left on it (None: there is none)."""
        while self.at < self.count:
            c = self.chunk(self.at)
            if c is not None and c.size <= LISTED_SMALL:
                return c
            self.at += 1
        return None

    @property
    def left(self) -> int:
        return self.count - self.at


def _one_chunk(node: object) -> ChunkRef | None:
    if type(node) is FileNode and node.chunks is not None and len(node.chunks) == 1:
        return node.chunks[0]
    return None


@dataclass
class Handle:
    """An open file: one the mount is writing, or a committed one and where it is read."""

    inode: Inode
    ref: Ref | None  # None for a file a view makes up (an empty input)
    file: LocalFile | None = None  # a file the mount is writing
    wrote: bool = False
    # Opened for writing by a caller other than root, whose writes drop setuid and setgid
    # (Filesystem.enable_killpriv_v2).
    drops_privs: bool = False
    node: FileNode | None = None  # a committed file
    chunks: tuple[ChunkRef, ...] = ()
    starts: list[int] = field(default_factory=list)  # offset of each chunk
    next_read: int = 0  # where a sequential reader would read next
    refused: int = 0  # the branch's count of refused changes already reported to this handle

    def __post_init__(self):
        ws = self.ref.workspace if self.ref is not None else None
        self.refused = ws.refused if ws is not None else 0  # only what is refused from now on

    def report_refused(self) -> None:
        """EIO, once a handle, for changes of its branch that the daemon refused since it was
        opened (each is also in the mount's log and reported by `pfs unmount`), as a disk
        reports a failed write-back."""
        ws = self.ref.workspace if self.ref is not None else None
        if ws is not None and ws.refused > self.refused:
            self.refused = ws.refused
            raise fail(errno.EIO)


class Reader:
    """Chunks of committed files, from the chunk cache or fetched in worker threads."""

    nursery: trio.Nursery  # for read-ahead; set by the runner

    def __init__(self, trees: Trees, io: Callable[..., Awaitable]):
        self.trees = trees
        self._io = io
        self._inflight: dict[bytes, trio.Event] = {}
        # a listed small file's chunk -> the rest of its listing, looked at once it is read
        self._next_window: OrderedDict[bytes, _Listed] = OrderedDict()
        self._pending = 0  # entries left in _next_window
        self.fetched = 0  # chunk bytes fetched, read-ahead included (xattr user.pfs.fetched)

    async def open(self, inode: Inode, entry: FileNode, r: Ref) -> Handle:
        """A handle to read a committed file through, its chunks located in the background."""
        if type(entry) is FileNode and entry.chunks is not None:
            chunks = entry.chunks  # held in the node (short files): no thread needed
        else:
            chunks = await self._io(self._chunks, entry)
        starts = list(itertools.accumulate((c.size for c in chunks), initial=0))[:-1]
        h = Handle(inode, r, node=entry, chunks=chunks, starts=starts)
        if len(chunks) > 1:  # where they are, in one request rather than one per chunk read
            self.nursery.start_soon(self._locate, chunks)
        return h

    def prefetch_listed(self, entries: Sequence[tuple[str, object]]) -> int:
        """Fetch the chunks of the small files among a directory's listed `entries` in the
        background, a window at a time: their locations in one request, then their data a batch
        at a time, in listing order (the order a copy reads them in). How many entries it took."""
        self._window(_Listed(len(entries), lambda i: _one_chunk(entries[i][1])))
        return len(entries)

    def prefetch_names(self, page: DirNames, start: int) -> int:
        """`prefetch_listed` for the entries of a plain listing's page from `start` on, except
        that the first window waits for a reader of the first small file: such a listing is
        most often a big directory's, read by find or ls -f, which open nothing."""
        chunks, sizes = page.chunks, page.sizes

        def chunk(i: int) -> ChunkRef | None:
            return ChunkRef(chunks[start + i], sizes[start + i]) if chunks[start + i] else None

        listed = _Listed(len(chunks) - start, chunk)
        first = listed.first()
        if first is not None:
            self._wait(first.hash, listed)
        return len(chunks) - start

    def _window(self, listed: _Listed) -> None:
        """Fetch the next window of `listed`; the rest waits for a reader of its middle."""
        now = listed.window()
        if now and listed.left:
            self._wait(now[len(now) // 2].hash, listed)
        now = [c for c in now if c.hash not in self._inflight and self.trees.cached_chunk(c.hash) is None]
        if now:
            for c in now:
                self._inflight[c.hash] = trio.Event()
            self.nursery.start_soon(self._fetch_listed, now)

    def _wait(self, key: bytes, listed: _Listed) -> None:
        """Keep `listed` until a reader reads the chunk `key`; the oldest go past the bound."""
        old = self._next_window.pop(key, None)
        self._pending += listed.left - (old.left if old is not None else 0)
        self._next_window[key] = listed
        while self._pending > LISTED_PENDING and len(self._next_window) > 1:
            self._pending -= self._next_window.popitem(last=False)[1].left

    async def _fetch_listed(self, chunks: list[ChunkRef]) -> None:
        try:
            await self._io(self.trees.locate, chunks)
        except Exception as e:  # noqa: BLE001 - each fetch below locates what is left
            log.warning("cannot locate the chunks of a listed directory: %s", e)
        for i in range(0, len(chunks), LISTED_BATCH):
            await self._fetch(chunks[i : i + LISTED_BATCH])

    def _chunks(self, f: FileNode) -> tuple[ChunkRef, ...]:
        chunks = self.trees.chunks(f)
        if isinstance(f, Framed):
            frame = [self.trees.chunks(p) if p is not None else () for p in (f.header, f.footer)]
            chunks = (*frame[0], *chunks, *frame[1])
        return chunks

    async def copy_into(self, f: LocalFile, node: FileNode) -> None:
        """A committed file's content into `f`, a chunk at a time: a big file goes to its
        temporary file as it comes, never whole into memory."""
        off = 0
        chunks = await self._io(self.trees.chunks, node)
        for i, c in enumerate(chunks):
            self.read_ahead(chunks, i + 1)
            data = await self.chunk(c)
            await self._io(f.pwrite, off, data)
            off += len(data)

    async def chunk_of(self, chunks: Sequence[ChunkRef], i: int, ahead: bool) -> bytes:
        """The data of `chunks[i]` (of a file a sparse copy fills its holes from); `ahead`: a
        sequential reader, so fetch the chunks after it too."""
        if ahead:
            self.read_ahead(chunks, i + 1)
        return await self.chunk(chunks[i])

    def read_ahead(self, chunks: Sequence[ChunkRef], start: int) -> None:
        """Fetch the chunks from `start` on that a sequential reader will want next, in the
        background, FETCH_BATCH at a time (unless the file ends first)."""
        by_hash = {  # a file may hold a chunk twice
            c.hash: c
            for c in chunks[start : start + AHEAD]
            if c.hash not in self._inflight and self.trees.cached_chunk(c.hash) is None
        }
        wanted = list(by_hash.values())
        if len(wanted) < FETCH_BATCH and start + AHEAD < len(chunks):
            return
        for i in range(0, len(wanted), FETCH_BATCH):
            batch = wanted[i : i + FETCH_BATCH]
            for c in batch:
                self._inflight[c.hash] = trio.Event()
            self.nursery.start_soon(self._fetch, batch)

    async def _locate(self, chunks: tuple[ChunkRef, ...]) -> None:
        for i in range(0, len(chunks), LOCATE_BATCH):
            try:
                await self._io(self.trees.locate, chunks[i : i + LOCATE_BATCH])
            except Exception as e:  # noqa: BLE001 - best effort: each read locates its own chunks
                log.warning("cannot locate the chunks of a file: %s", e)
                return

    async def _fetch(self, chunks: list[ChunkRef]) -> None:
        try:
            await self._io(self.trees.fetch, chunks)
            self.fetched += sum(c.size for c in chunks)
        except Exception as e:  # noqa: BLE001 - a read-ahead failure is retried by the read
            log.warning("read-ahead of chunk %s failed: %s", chunks[0].hash.hex(), e)
        finally:
            for c in chunks:
                self._inflight.pop(c.hash).set()

    async def chunk(self, c: ChunkRef) -> bytes:
        """A chunk's data: cached, fetched by another reader in flight, or fetched now."""
        if self._next_window:
            rest = self._next_window.pop(c.hash, None)
            if rest is not None:
                self._pending -= rest.left
                self._window(rest)
        while True:
            data = self.trees.cached_chunk(c.hash)
            if data is not None:
                return data
            pending = self._inflight.get(c.hash)
            if pending is None:
                self._inflight[c.hash] = trio.Event()
                await self._fetch([c])
                data = self.trees.cached_chunk(c.hash)
                if data is None:  # fetched but already evicted, or the fetch failed: fail loudly
                    await self._io(self.trees.fetch, [c])
                    data = self.trees.cached_chunk(c.hash)
                if data is None:
                    raise DataLoss(f"chunk {c.hash.hex()} could not be read")
                return data
            await pending.wait()
