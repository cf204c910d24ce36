"""The FUSE file system: repos, refs and files of the store as a directory tree.

    MNT/<repo>/<branch>/<path>   the branch head, following new commits; writable
    MNT/<repo>/<commit>/<path>   a commit, immutable (also any ref: master^2, master~1)

Handlers are thin: they find the inode's entry (through the branch's pending writes, then the
commit's tree), act, and translate errors to errnos at the boundary. Blocking calls (the daemon,
the object store) run in worker threads. Whatever is immutable (finished commits, tree pages,
chunks) is cached for good, by us and by the kernel.
"""

from __future__ import annotations

import bisect
import errno
import functools
import itertools
import logging
import os
import posixpath
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import pyfuse3
import trio
import xxhash

from pfsfuse.api.client import Client
from pfsfuse.api.types import Chmod, Copy, Delete, Mkdir, Symlink
from pfsfuse.metadata import names, refs
from pfsfuse.metadata.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NameTooLong,
    NoSpace,
    NotFound,
    PfsError,
)
from pfsfuse.metadata.records import EMPTY_DIR, ChunkRef, Commit, DirNode, FileNode, SymlinkNode
from pfsfuse.mount.trees import PAGE, Trees
from pfsfuse.mount.workspace import GONE, LocalFile, Workspace

log = logging.getLogger("pfsfuse.mount")

IMMUTABLE_TTL = 24 * 3600.0  # finished commits never change: let the kernel cache them
MOVING_TTL = 0.5  # branch heads: a new commit shows within a second
RESOLVE_TTL = 0.25  # how long we trust a branch head before asking the daemon again
LISTING_TTL = 1.0  # repos and branches
AHEAD = 32  # chunks read ahead of a sequential reader
FETCH_BATCH = 4  # chunks fetched by one worker thread: each hand-off to a thread costs CPU
LOCATE_BATCH = 4096  # chunk locations asked for at once when a file is opened
BLOCK = 1 << 20  # what we tell readers to read at a time

_ERRNO = {  # the first class an error is an instance of decides
    NotFound: errno.ENOENT,
    NameTooLong: errno.ENAMETOOLONG,
    AlreadyExists: errno.EEXIST,
    InvalidArgument: errno.EINVAL,
    FailedPrecondition: errno.EROFS,
    NoSpace: errno.ENOSPC,
    DataLoss: errno.EIO,
}


def _translate(handler):
    """Errors become errnos here, at the boundary; anything unexpected is logged as EIO."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except PfsError as e:
            code = next((c for cls, c in _ERRNO.items() if isinstance(e, cls)), errno.EIO)
            if code == errno.EIO:
                log.error("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(code) from None
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _fail(code: int):
    return pyfuse3.FUSEError(code)


@dataclass
class Inode:
    ino: int
    kind: str  # "root", "repo", or "entry" (a path under a ref; "" is the ref's directory)
    repo: str = ""
    ref: str = ""
    path: str = ""
    lookups: int = 0
    link: str = ""  # shown to the kernel as a symlink to this, stored as a reference to its data


@dataclass
class Ref:
    """A ref directory: the commit it shows now and, for a writable branch, its workspace."""

    repo: str
    ref: str
    moving: bool  # a branch or an ancestry ref: re-resolved, never cached for good
    branch: bool
    commit: Commit | None = None
    resolved: float = 0.0
    flushed: int = -1  # the workspace flush count the commit reflects
    workspace: Workspace | None = None
    resolving: trio.Event | None = None  # set when the resolution in flight is done

    @property
    def root(self) -> DirNode:
        return self.commit.tree if self.commit is not None else EMPTY_DIR

    @property
    def mtime(self) -> float:
        c = self.commit
        return (c.finished or c.started) if c is not None else time.time()

    @property
    def ttl(self) -> float:
        return MOVING_TTL if self.moving else IMMUTABLE_TTL


class Framed(FileNode, tag="F", frozen=True, array_like=True):
    """A file of a directory with a header or footer, which reads as header + file + footer (as
    get-file does): `size` counts all three; `hash` and `chunks` are the file's own."""

    header: FileNode | None = None
    footer: FileNode | None = None


def _framed(parent: DirNode, node):
    """`node` as read in `parent`: framed by the directory's header and footer, if it has them."""
    if not parent.framed or not isinstance(node, FileNode) or isinstance(node, Framed):
        return node
    extra = sum(p.size for p in (parent.header, parent.footer) if p is not None)
    return Framed(
        node.size + extra, node.hash, node.chunks, node.executable, parent.header, parent.footer
    )


@dataclass
class Handle:
    inode: Inode
    ref: Ref
    file: LocalFile | None = None  # a file the mount is writing
    wrote: bool = False
    node: FileNode | None = None  # a committed file
    chunks: tuple[ChunkRef, ...] = ()
    starts: list[int] = field(default_factory=list)  # offset of each chunk
    next_read: int = 0  # where a sequential reader would read next
    refused: int = 0  # the branch's count of refused changes already reported to this handle

    def __post_init__(self):
        ws = self.ref.workspace
        self.refused = ws.refused if ws is not None else 0  # only what is refused from now on


@dataclass
class DirHandle:
    inode: Inode
    listing: list  # [(name, entry)] when merged with pending writes, else fetched by the page
    node: DirNode  # the directory itself (its header and footer frame its files)
    page: tuple = (0, None)  # (index of its first entry, entries): the page being read
    ahead: str | None = None  # the name after which the next page is being fetched


class Filesystem(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(
        self,
        client: Client,
        mountpoint: str,
        tmpdir: str,
        repos: list[str] | None = None,
        pinned: dict[str, str] | None = None,
        read_only: bool = False,
        idle: float = 2.0,
        lost: Callable[[str], None] = lambda what: None,
    ):
        super().__init__()
        self.client = client
        self.mountpoint = os.path.abspath(mountpoint)
        self.tmpdir = tmpdir
        self.trees = Trees(client)
        self.only = set(repos) if repos else None
        self.pinned = pinned or {}  # repo -> ref shown directly at MNT/<repo>
        self.read_only = read_only
        self.idle = idle
        self.lost = lost  # told of every change that will not be saved, for `pfs unmount`
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started = time.time()
        self._inodes: dict[int, Inode] = {}
        self._by_key: dict[tuple, int] = {}
        self._refs: dict[tuple[str, str], Ref] = {}
        self._listings: dict[tuple, tuple[float, list[str]]] = {}
        self._handles: dict[int, Handle | DirHandle] = {}
        self._fh = itertools.count(1)
        self._inflight: dict[bytes, trio.Event] = {}
        self._limiter = trio.CapacityLimiter(16)
        self.nursery: trio.Nursery | None = None  # for read-ahead; set by the runner
        self.fetched = 0  # chunk bytes fetched, read-ahead included (xattr user.pfs.fetched)
        root = Inode(pyfuse3.ROOT_INODE, "root", lookups=1)
        self._inodes[root.ino] = root
        self._by_key[("root",)] = root.ino

    # -- plumbing -------------------------------------------------------------------------------

    async def _io(self, fn, *args):
        return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)

    def _inode(self, kind: str, repo: str = "", ref: str = "", path: str = "") -> Inode:
        """The inode of a path: its number is a hash of the path, so it is the same in every
        mount of the same store (unless two paths collide, which shifts one of them)."""
        key = (kind, repo, ref, path)
        ino = self._by_key.get(key)
        if ino is not None:
            return self._inodes[ino]
        ino = xxhash.xxh3_64_intdigest("\0".join(key).encode()) >> 1
        while ino <= pyfuse3.ROOT_INODE or ino in self._inodes:
            ino = (ino + 1) & ((1 << 63) - 1)
        inode = Inode(ino, kind, repo, ref, path)
        self._inodes[ino] = inode
        self._by_key[key] = ino
        return inode

    def _get(self, ino: int) -> Inode:
        inode = self._inodes.get(ino)
        if inode is None:
            raise _fail(errno.ESTALE)
        return inode

    async def _listing(self, key: tuple, fetch) -> list[str]:
        hit = self._listings.get(key)
        if hit is None or time.monotonic() - hit[0] > LISTING_TTL:
            hit = (time.monotonic(), await self._io(fetch))
            self._listings[key] = hit
        return hit[1]

    async def _repos(self) -> list[str]:
        if self.pinned:
            return sorted(self.pinned)
        found = await self._listing(("repos",), lambda: [r.name for r in self.client.list_repo()])
        return [r for r in found if self.only is None or r in self.only]

    async def _branches(self, repo: str) -> list[str]:
        return await self._listing(
            ("branches", repo), lambda: [b.name for b in self.client.list_branch(repo)]
        )

    async def _ref(self, repo: str, ref: str) -> Ref:
        """The state of a ref directory, re-resolved when it may have moved."""
        key = (repo, ref)
        r = self._refs.get(key)
        if r is None:
            base, steps = refs.parse(ref)
            branch = not refs.is_commit_id(base) and steps == 0
            r = Ref(repo, ref, moving=not refs.is_commit_id(base), branch=branch)
            if branch and not self.read_only:
                r.workspace = Workspace(self.client, repo, ref, self.tmpdir, self._io)
                r.workspace.on_reshaped = functools.partial(self._forget_dentries, repo, ref)
                r.workspace.on_lost = self.lost
            self._refs[key] = r
        while True:
            stale = r.workspace is not None and r.flushed != r.workspace.flushed
            expired = r.moving and time.monotonic() - r.resolved > RESOLVE_TTL
            if not (r.resolved == 0.0 or stale or expired):
                return r
            if r.resolving is not None:
                # The overlay may already have dropped what a flush sent: nobody may read the
                # commit from before it, so wait for the resolution in flight, then check again.
                await r.resolving.wait()
                continue
            r.resolving = trio.Event()
            try:
                flushed = r.workspace.flushed if r.workspace is not None else -1
                try:
                    r.commit = await self._io(self.client.inspect_commit, repo, ref)
                except NotFound:
                    if not r.branch:
                        raise
                    r.commit = None  # a branch without commits: an empty directory
                r.flushed, r.resolved = flushed, time.monotonic()
            finally:
                r.resolving.set()
                r.resolving = None

    async def _entry(self, r: Ref, path: str):
        """What is at `path` under a ref: a node, a LocalFile being written, or None."""
        if not path:
            return r.root
        ws = r.workspace
        if ws is not None:
            found = ws.resolve(path)
            if found[0] == "entry":
                return None if found[1] is GONE else found[1]
            if found[0] == "under":
                return await self._walk(found[1], found[2])
        return await self._walk(r.root, path)

    async def _walk(self, d: DirNode, path: str):
        node = parent = d
        for part in path.split("/"):
            if not isinstance(node, DirNode):
                return None
            parent = node
            hit = self.trees.cached_child(node, part)  # most lookups: no thread, no daemon
            node = hit[0] if hit is not None else await self._io(self.trees.child, node, part)
        return _framed(parent, node)

    def _attr(self, inode: Inode, entry, r: Ref | None, a: pyfuse3.EntryAttributes | None = None
              ) -> pyfuse3.EntryAttributes:
        """The attributes of an entry. `a`, filled by an earlier call for an entry of the same
        ref, is filled again: a listing sends each one before it asks for the next."""
        if r is None:  # the root and repo directories: mkdir makes repos and branches there
            ttl, mtime, writable = LISTING_TTL, self.started, self._growable()
        else:
            ttl, mtime, writable = r.ttl, r.mtime, r.workspace is not None
        if a is None:
            a = pyfuse3.EntryAttributes()
            a.generation = 0
            a.st_nlink = 1  # "unknown" for directories: find must not assume leaf directories
            a.st_uid, a.st_gid = self.uid, self.gid
            a.st_blksize = BLOCK
            a.entry_timeout = a.attr_timeout = ttl
        a.st_ino = inode.ino
        if isinstance(entry, LocalFile):
            mtime = entry.mtime
        if entry is None or isinstance(entry, DirNode):
            a.st_mode = stat.S_IFDIR | (0o755 if writable else 0o555)
            a.st_size = 4096
        elif isinstance(entry, SymlinkNode):
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_size = entry.size
        else:
            x = 0o111 if entry.executable else 0
            a.st_mode = stat.S_IFREG | (0o644 if writable else 0o444) | x
            a.st_size = entry.size
        a.st_blocks = (a.st_size + 511) // 512
        ns = int(mtime * 1e9)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        return a

    async def _describe(self, inode: Inode):
        """(entry, ref) of an inode; entry None for the root and repo directories."""
        if inode.kind != "entry":
            return None, None
        r = await self._ref(inode.repo, inode.ref)
        entry = await self._entry(r, inode.path)
        if entry is None:
            raise _fail(errno.ENOENT)
        return entry, r

    @staticmethod
    def _name(name: bytes) -> str:
        if len(name) > names.MAX_COMPONENT:
            raise _fail(errno.ENAMETOOLONG)
        try:
            text = name.decode()
            names.path(text)
        except (UnicodeDecodeError, PfsError):
            raise _fail(errno.EINVAL) from None
        if "/" in text:
            raise _fail(errno.EINVAL)
        return text

    # -- lookups and attributes -----------------------------------------------------------------

    @_translate
    async def lookup(self, parent_ino, name, ctx=None):
        parent = self._get(parent_ino)
        text = self._name(name) if name not in (b".", b"..") else name.decode()
        inode, entry, r = await self._lookup(parent, text)
        inode.lookups += 1
        return self._attr(inode, entry, r)

    async def _lookup(self, parent: Inode, name: str):
        if name == ".":
            entry, r = await self._describe(parent)
            return parent, entry, r
        if parent.kind == "root":
            if name not in await self._repos():
                raise _fail(errno.ENOENT)
            if name in self.pinned:
                r = await self._ref(name, self.pinned[name])
                return self._inode("entry", name, self.pinned[name], ""), r.root, r
            return self._inode("repo", name), None, None
        if parent.kind == "repo":
            try:
                refs.parse(name)
            except PfsError:
                raise _fail(errno.ENOENT) from None
            if name not in await self._branches(parent.repo):
                base, steps = refs.parse(name)
                if not refs.is_commit_id(base) and steps == 0:
                    raise _fail(errno.ENOENT)  # not a branch, a commit or an ancestry ref
            r = await self._ref(parent.repo, name)
            return self._inode("entry", parent.repo, name, ""), r.root, r
        r = await self._ref(parent.repo, parent.ref)
        path = names.join(parent.path, name)
        entry = await self._entry(r, path)
        if entry is None:
            raise _fail(errno.ENOENT)
        return self._inode("entry", parent.repo, parent.ref, path), entry, r

    async def forget(self, inode_list):
        for ino, n in inode_list:
            inode = self._inodes.get(ino)
            if inode is None or inode.kind == "root":
                continue
            inode.lookups -= n
            if inode.lookups <= 0:
                del self._inodes[ino]
                self._by_key.pop((inode.kind, inode.repo, inode.ref, inode.path), None)

    @_translate
    async def getattr(self, ino, ctx=None):
        inode = self._get(ino)
        try:
            entry, r = await self._describe(inode)
        except (NotFound, pyfuse3.FUSEError) as e:
            # Gone from its branch (the file or the branch deleted) but open: fstat answers from
            # the handle, as a disk does for an unlinked file.
            h = next((h for h in self._handles.values() if h.inode is inode), None)
            if h is None or getattr(e, "errno", errno.ENOENT) != errno.ENOENT:
                raise
            entry, r = h.file or h.node, h.ref
        return self._attr(inode, entry, r)

    @_translate
    async def readlink(self, ino, ctx=None):
        inode = self._get(ino)
        entry, _ = await self._describe(inode)
        if isinstance(entry, SymlinkNode):
            return entry.target.encode()
        if inode.link:  # the kernel may still hold it as the symlink it was made as
            return inode.link.encode()
        raise _fail(errno.EINVAL)

    # -- directories ------------------------------------------------------------------------------

    @_translate
    async def opendir(self, ino, ctx=None):
        inode = self._get(ino)
        if inode.kind == "root":
            h = DirHandle(inode, [(n, None) for n in await self._repos()], EMPTY_DIR)
        elif inode.kind == "repo":
            h = DirHandle(inode, [(n, None) for n in await self._branches(inode.repo)], EMPTY_DIR)
        else:
            entry, r = await self._describe(inode)
            if not isinstance(entry, DirNode):
                raise _fail(errno.ENOTDIR)
            ws = r.workspace
            if ws is not None and ws.children.get(inode.path):
                # Pending writes in this directory: list it whole, merged.
                h = DirHandle(inode, await self._merged(r, inode.path), entry)
            else:
                h = DirHandle(inode, None, entry)
        fh = next(self._fh)
        self._handles[fh] = h
        return fh

    async def _merged(self, r: Ref, path: str) -> list:
        """The entries of a branch's directory with its pending writes applied. A flush while
        the directory is read may drop pending entries from the overlay: then read it again."""
        ws = r.workspace
        while True:
            flushed = ws.flushed
            entry = await self._entry(await self._ref(r.repo, r.ref), path)
            if not isinstance(entry, DirNode):
                raise _fail(errno.ENOENT if entry is None else errno.ENOTDIR)
            base = await self._io(self._all_entries, entry)
            if ws.flushed == flushed:
                return ws.merge(path, base)

    def _all_entries(self, d: DirNode) -> list:
        out, after = [], None
        while page := self.trees.page(d, after):
            out.extend(page)
            after = page[-1][0]
        return out

    @_translate
    async def readdir(self, fh, start_id, token):
        h = self._handles[fh]
        inode = h.inode
        r = await self._ref(inode.repo, inode.ref) if inode.kind == "entry" else None
        attr = None
        index = start_id
        while True:
            if h.listing is not None:
                batch = h.listing[index:]
            else:
                batch = await self._dir_page(h, index)
            if not batch:
                return
            for name, entry in batch:
                if r is not None:  # a directory of a commit: its entries are at hand
                    child = self._inode("entry", inode.repo, inode.ref, names.join(inode.path, name))
                    entry, child_ref = _framed(h.node, entry), r
                else:
                    child, entry, child_ref = await self._lookup(inode, name)
                attr = self._attr(child, entry, child_ref, attr if r is not None else None)
                if not pyfuse3.readdir_reply(token, name.encode(), attr, index + 1):
                    return
                child.lookups += 1
                index += 1
            if h.listing is not None:
                return

    async def _dir_page(self, h: DirHandle, index: int) -> list:
        """Entries of a big directory from `index` on: readers go forward a page at a time, so
        one page is kept; a seek backwards starts over."""
        start, page = h.page
        if page is None or index < start:
            start, page = 0, await self._io(self.trees.page, h.node, None)
        while page and index >= start + len(page):
            start, page = start + len(page), await self._io(self.trees.page, h.node, page[-1][0])
        h.page = (start, page)
        if len(page) == PAGE and h.ahead != page[-1][0]:
            # Fetch the next page while the kernel takes this one's entries.
            h.ahead = page[-1][0]
            self.nursery.start_soon(self._page_ahead, h.node, h.ahead)
        return page[index - start :] if page else []

    async def _page_ahead(self, d: DirNode, after: str) -> None:
        try:
            await self._io(self.trees.page, d, after)
        except Exception as e:  # noqa: BLE001 - the reader asks again when it gets there
            log.warning("fetching a listing page ahead failed: %s", e)

    @_translate
    async def releasedir(self, fh):
        del self._handles[fh]

    # -- reading ------------------------------------------------------------------------------------

    @_translate
    async def open(self, ino, flags, ctx=None):
        inode = self._get(ino)
        entry, r = await self._describe(inode)
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        fh = next(self._fh)
        if isinstance(entry, DirNode):
            raise _fail(errno.EISDIR)
        if writing:
            ws = self._workspace(r)
            f = await self._writable(ws, inode.path, entry, truncate=bool(flags & os.O_TRUNC))
            self._handles[fh] = Handle(inode, r, file=f, wrote=True)
            return pyfuse3.FileInfo(fh=fh)
        if isinstance(entry, LocalFile):
            entry.handles += 1
            self._handles[fh] = Handle(inode, r, file=entry)
            return pyfuse3.FileInfo(fh=fh)
        return await self._open_node(inode, entry, r, fh)

    async def _open_node(self, inode: Inode, entry: FileNode, r: Ref, fh: int) -> pyfuse3.FileInfo:
        """Open a committed file for reading."""
        if type(entry) is FileNode and entry.chunks is not None:
            chunks = entry.chunks  # held in the node (short files): no thread needed
        else:
            chunks = await self._io(self._chunks, entry)
        starts = list(itertools.accumulate((c.size for c in chunks), initial=0))[:-1]
        self._handles[fh] = Handle(inode, r, node=entry, chunks=chunks, starts=starts)
        if len(chunks) > 1:  # where they are, in one request rather than one per chunk read
            self.nursery.start_soon(self._locate, chunks)
        # Pages of a finished commit stay valid forever; a branch's file may change.
        return pyfuse3.FileInfo(fh=fh, keep_cache=not r.moving)

    def _chunks(self, f: FileNode) -> tuple[ChunkRef, ...]:
        chunks = self.trees.chunks(f)
        if isinstance(f, Framed):
            frame = [self.trees.chunks(p) if p is not None else () for p in (f.header, f.footer)]
            chunks = (*frame[0], *chunks, *frame[1])
        return chunks

    async def _writable(self, ws: Workspace, path: str, entry, truncate: bool) -> LocalFile:
        """A local file to write `path` through: the one being written, or a copy on write (of
        the file's own content: a header and footer stay with the directory)."""
        if isinstance(entry, LocalFile):
            async with ws.lock:  # not while a flush is sending its content
                if not entry.dropped:
                    ws.reopened(entry)
                    if truncate:
                        entry.truncate(0)
                    return entry
            # That flush took it: the daemon has it now.
            entry = await self._entry(await self._ref(ws.repo, ws.branch), path)
            if not isinstance(entry, FileNode):
                raise _fail(errno.ENOENT)
        f = LocalFile(self.tmpdir, executable=entry.executable)
        if not truncate:
            try:
                await self._copy_into(f, entry)
            except BaseException:
                f.dropped = True  # nobody has it: its temporary file goes
                f.release()
                raise
        ws.created(path, f)
        return f

    async def _copy_into(self, f: LocalFile, node: FileNode) -> None:
        """A committed file's content into `f`, a chunk at a time: a big file goes to its
        temporary file as it comes, never whole into memory."""
        off = 0
        chunks = await self._io(self.trees.chunks, node)
        for i, c in enumerate(chunks):
            self._read_ahead(chunks, i + 1)
            data = await self._chunk(c)
            await self._io(f.pwrite, off, data)
            off += len(data)

    @_translate
    async def read(self, fh, off, size):
        h = self._handles[fh]
        if h.file is not None:
            return h.file.pread(off, size)
        end = min(off + size, h.node.size)
        if off >= end:
            return b""
        first = bisect.bisect_right(h.starts, off) - 1
        last = bisect.bisect_right(h.starts, end - 1) - 1
        if off == h.next_read or first == 0:
            self._read_ahead(h.chunks, last + 1)
        h.next_read = end
        parts = []
        for i in range(first, last + 1):
            data = await self._chunk(h.chunks[i])
            lo = max(0, off - h.starts[i])
            hi = min(len(data), end - h.starts[i])
            parts.append(data if (lo, hi) == (0, len(data)) else memoryview(data)[lo:hi])
        # A chunk read from a local pack is a view of its mapping: a request within one chunk is
        # answered from the page cache without a copy here, and one across chunks with one copy.
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_ahead(self, chunks: Sequence[ChunkRef], start: int) -> None:
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

    async def _chunk(self, c: ChunkRef) -> bytes:
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

    @_translate
    async def release(self, fh):
        h = self._handles.pop(fh)
        if h.file is not None:
            ws = h.ref.workspace
            if ws is not None:
                ws.closed(h.file, h.wrote)
            else:
                h.file.handles -= 1
                h.file.release()

    @_translate
    async def flush(self, fh):
        """close(2): a writer learns of changes to its branch that the daemon refused."""
        h = self._handles[fh]
        if h.wrote:
            self._report_refused(h)

    @_translate
    async def fsync(self, fh, datasync):
        """Durable means in the daemon's open commit, even for a file still open for writing."""
        h = self._handles[fh]
        ws = h.ref.workspace
        if ws is None:
            return
        f = h.file
        if f is not None and f.writers and ws.overlay.get(f.path) is f:
            ws.synced(f)
        await ws.flush()
        self._report_refused(h)

    @staticmethod
    def _report_refused(h: Handle) -> None:
        """EIO, once a handle, for changes of its branch that the daemon refused since it was
        opened (each is also in the mount's log and reported by `pfs unmount`), as a disk
        reports a failed write-back."""
        ws = h.ref.workspace
        if ws is not None and ws.refused > h.refused:
            h.refused = ws.refused
            raise _fail(errno.EIO)

    # -- writing ------------------------------------------------------------------------------------

    def _workspace(self, r: Ref | None) -> Workspace:
        if r is None or r.workspace is None:
            raise _fail(errno.EROFS)
        return r.workspace

    async def _parent(self, parent_ino: int, name: bytes) -> tuple[Inode, Ref, Workspace, str]:
        parent = self._get(parent_ino)
        if parent.kind != "entry":
            raise _fail(errno.EROFS if parent.kind == "repo" or self.read_only else errno.EPERM)
        entry, r = await self._describe(parent)
        ws = self._workspace(r)
        if not isinstance(entry, DirNode):
            raise _fail(errno.ENOTDIR)
        path = names.join(parent.path, self._name(name))
        if len(path.encode()) > names.MAX_PATH:  # each name fits, but not the path they make
            raise _fail(errno.ENAMETOOLONG)
        return parent, r, ws, path

    @_translate
    async def create(self, parent_ino, name, mode, flags, ctx=None):
        parent, r, ws, path = await self._parent(parent_ino, name)
        existing = await self._entry(r, path)
        if isinstance(existing, DirNode):
            raise _fail(errno.EISDIR)
        f = LocalFile(self.tmpdir, executable=bool(mode & 0o111))
        ws.created(path, f)
        inode = self._inode("entry", parent.repo, parent.ref, path)
        inode.lookups += 1
        fh = next(self._fh)
        self._handles[fh] = Handle(inode, r, file=f, wrote=True)
        return pyfuse3.FileInfo(fh=fh), self._attr(inode, f, r)

    @_translate
    async def write(self, fh, off, buf):
        h = self._handles[fh]
        if h.file is None or not h.wrote:
            raise _fail(errno.EBADF)
        n = h.file.pwrite(off, buf)
        h.ref.workspace.changed = time.monotonic()
        return n

    @_translate
    async def setattr(self, ino, attr, fields, fh, ctx):
        inode = self._get(ino)
        entry, r = await self._describe(inode)
        if r is None:
            raise _fail(errno.EPERM)
        ws = self._workspace(r)
        if fields.update_size:
            if isinstance(entry, DirNode):
                raise _fail(errno.EISDIR)
            open_file = isinstance(entry, LocalFile) and entry.writers
            f = entry if isinstance(entry, LocalFile) else await self._writable(ws, inode.path, entry, False)
            f.truncate(attr.st_size)
            if not isinstance(entry, LocalFile):
                ws.closed(f, wrote=True)  # the copy on write is not open: log it now
            elif not open_file:
                ws.changed_file(f)
            entry = f
        if fields.update_mode and not isinstance(entry, (DirNode, SymlinkNode)):
            executable = bool(attr.st_mode & 0o111)
            if isinstance(entry, LocalFile):
                entry.executable = executable
                if not entry.writers:
                    ws.changed_file(entry)
            elif entry.executable != executable:
                entry = msgspec.structs.replace(entry, executable=executable)
                ws.put_node(inode.path, entry, Chmod(inode.path, executable))
        # Times, owners and the other mode bits are not versioned: accepted and not kept.
        return self._attr(inode, entry, r)

    @_translate
    async def mkdir(self, parent_ino, name, mode, ctx):
        top = self._get(parent_ino)
        if top.kind in ("root", "repo") and self._growable():
            return await self._make_repo_or_branch(top, self._name(name))
        parent, r, ws, path = await self._parent(parent_ino, name)
        if await self._entry(r, path) is not None:
            raise _fail(errno.EEXIST)
        ws.put_node(path, EMPTY_DIR, Mkdir(path))
        inode = self._inode("entry", parent.repo, parent.ref, path)
        inode.lookups += 1
        return self._attr(inode, EMPTY_DIR, r)

    def _growable(self) -> bool:
        """Whether mkdir at the top makes repos and in a repo makes branches: not in a read-only
        mount, nor one that shows commits (-c) at the top."""
        return not self.read_only and not self.pinned

    async def _make_repo_or_branch(self, parent: Inode, name: str) -> pyfuse3.EntryAttributes:
        """A new repo, or a new branch with no commits yet (its first write starts one)."""
        if parent.kind == "root":
            if self.only is not None and name not in self.only:
                raise _fail(errno.EPERM)  # it would not show in this mount
            await self._io(self.client.create_repo, name)
            self._listings.pop(("repos",), None)
            inode, entry, r = self._inode("repo", name), None, None
        else:
            base, steps = refs.parse(name)
            if refs.is_commit_id(base) or steps:
                raise _fail(errno.EINVAL)  # the name of a commit or an ancestry ref, not a branch's
            self._listings.pop(("branches", parent.repo), None)  # made elsewhere a moment ago?
            if name in await self._branches(parent.repo):
                raise _fail(errno.EEXIST)
            await self._io(self.client.create_branch, parent.repo, name)
            self._listings.pop(("branches", parent.repo), None)
            r = await self._ref(parent.repo, name)
            inode, entry = self._inode("entry", parent.repo, name, ""), r.root
        inode.lookups += 1
        return self._attr(inode, entry, r)

    @_translate
    async def unlink(self, parent_ino, name, ctx):
        _, r, ws, path = await self._parent(parent_ino, name)
        entry = await self._entry(r, path)
        if entry is None:
            raise _fail(errno.ENOENT)
        if isinstance(entry, DirNode):
            raise _fail(errno.EISDIR)
        ws.delete(path, Delete(path, missing_ok=True))

    @_translate
    async def rmdir(self, parent_ino, name, ctx):
        _, r, ws, path = await self._parent(parent_ino, name)
        entry = await self._entry(r, path)
        if entry is None:
            raise _fail(errno.ENOENT)
        if not isinstance(entry, DirNode):
            raise _fail(errno.ENOTDIR)
        if await self._merged(r, path):
            raise _fail(errno.ENOTEMPTY)
        ws.delete(path, Delete(path, missing_ok=True))

    @_translate
    async def symlink(self, parent_ino, name, target, ctx):
        parent, r, ws, path = await self._parent(parent_ino, name)
        if await self._entry(r, path) is not None:
            raise _fail(errno.EEXIST)
        try:
            text = names.link_target(target.decode())
        except UnicodeDecodeError:
            raise _fail(errno.EINVAL) from None  # the store keeps text (UTF-8) targets
        node = SymlinkNode(text)  # what the kernel must see now: it asked for a symlink
        source = await self._source_of(text, parent)
        # A link to data in the store is stored as a reference to that data, copying nothing: a
        # regular file once the daemon has it. A directory whose paths would grow too long there
        # stays a symlink.
        try:
            referred = source is not None and await self._refer(ws, path, source, shown=node)
        except NameTooLong:
            referred = False
        if referred:
            ws.reshaped.add(path)  # the kernel must look it up again once it is a file
        else:
            ws.put_node(path, node, Symlink(path, text))
        inode = self._inode("entry", parent.repo, parent.ref, path)
        inode.lookups += 1
        if referred:
            inode.link = text
        return self._attr(inode, node, r)

    async def _source_of(self, target: str, parent: Inode):
        """_reference of what a link target names, when it is a file or directory in the mount."""
        if not target.startswith("/"):
            here = [parent.repo] if parent.repo in self.pinned else [parent.repo, parent.ref]
            target = posixpath.join(self.mountpoint, *here, parent.path, target)
        rel = posixpath.relpath(posixpath.normpath(target), self.mountpoint)
        parts = rel.split("/")
        if rel.startswith("..") or not parts or parts[0] in ("", "."):
            return None
        repo = parts[0]
        if repo in self.pinned:
            ref, path = self.pinned[repo], "/".join(parts[1:])
        elif len(parts) >= 3:
            ref, path = parts[1], "/".join(parts[2:])
        else:
            return None  # a repo or ref directory itself is not data
        try:
            return await self._reference(repo, ref, names.path(path))
        except (PfsError, pyfuse3.FUSEError):
            return None

    async def _reference(self, repo: str, ref: str, path: str):
        """(node, Copy op, workspace) naming what `path` under `ref` holds now, by the commit
        where the daemon has it; pending writes there are sent first. The workspace is the
        branch's when that commit is still open (what it names may change), else None."""
        r = await self._ref(repo, ref)
        if r.workspace is not None and r.workspace.ops:
            await r.workspace.flush()
            r = await self._ref(repo, ref)
        entry = await self._entry(r, path)
        if entry is None or isinstance(entry, LocalFile) or r.commit is None:
            return None  # not there, or still being written: nothing the daemon can refer to
        live = r.workspace if r.commit.finished is None else None
        return entry, Copy(path, repo, r.commit.id, path), live

    async def _refer(self, ws: Workspace, path: str, source: tuple, shown=None) -> bool:
        """Log a reference copy of `source` (from _reference) to `path`, shown to the kernel as
        `shown` (by default what it refers to). One to another branch's open commit goes to the
        daemon at once, while that commit still holds what it names (a later change there would
        change or remove it first); False when it cannot go first (earlier changes in `ws` wait
        for a file open for writing). NameTooLong if a path below a directory would pass the
        limit."""
        node, op, live = source
        op = msgspec.structs.replace(op, path=path)
        if isinstance(node, DirNode) and len(path.encode()) > len(op.src_path.encode()):
            names.check_depth(path, await self._io(self.trees.longest, node))
        node = node if shown is None else shown
        if live is None or live is ws:
            ws.put_node(path, node, op)
            return True
        await ws.flush()
        if ws.ops:
            return False
        ws.put_node(path, node, op)
        await ws.flush()
        return True

    @_translate
    async def link(self, ino, new_parent_ino, new_name, ctx):
        inode = self._get(ino)
        parent, r, ws, path = await self._parent(new_parent_ino, new_name)
        if await self._entry(r, path) is not None:
            raise _fail(errno.EEXIST)
        source = await self._reference(inode.repo, inode.ref, inode.path) if inode.kind == "entry" else None
        if source is None:
            raise _fail(errno.EPERM)
        node = source[0]
        if not await self._refer(ws, path, source):
            raise _fail(errno.EXDEV)
        new = self._inode("entry", parent.repo, parent.ref, path)
        new.lookups += 1
        return self._attr(new, node, r)

    @_translate
    async def rename(self, old_parent_ino, old_name, new_parent_ino, new_name, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _fail(errno.EINVAL)
        old_parent, old_ref, old_ws, old = await self._parent(old_parent_ino, old_name)
        new_parent, new_ref, new_ws, new = await self._parent(new_parent_ino, new_name)
        entry = await self._entry(old_ref, old)
        if entry is None:
            raise _fail(errno.ENOENT)
        target = await self._entry(new_ref, new)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise _fail(errno.EEXIST)
            if isinstance(target, DirNode):
                if not isinstance(entry, DirNode):
                    raise _fail(errno.EISDIR)
                if await self._merged(new_ref, new):
                    raise _fail(errno.ENOTEMPTY)
            elif isinstance(entry, DirNode):
                raise _fail(errno.ENOTDIR)
        if isinstance(entry, LocalFile) and entry.writers and old_ws is new_ws:
            old_ws.moved(old, new, entry, Delete(old, missing_ok=True))
        else:
            # Files being written in a renamed directory go with it (they have no reference yet).
            writing = [
                f for f in old_ws.writing if f.path.startswith(old + "/") and old_ws.overlay.get(f.path) is f
            ]
            if writing and new_ws is not old_ws:
                raise _fail(errno.EXDEV)
            for f in writing:  # (the rest of the directory is checked by _refer)
                if len(f.path.encode()) - len(old.encode()) + len(new.encode()) > names.MAX_PATH:
                    raise _fail(errno.ENAMETOOLONG)
            source = await self._reference(old_parent.repo, old_parent.ref, old)
            # None: still being written in another branch, no reference yet
            if source is None or not await self._refer(new_ws, new, source):
                raise _fail(errno.EXDEV)
            old_ws.delete(old, Delete(old, missing_ok=True))
            for f in writing:
                old_ws.moved(f.path, new + f.path[len(old) :], f, Delete(f.path, missing_ok=True))
        self._renamed((old_parent.repo, old_parent.ref, old), (new_parent.repo, new_parent.ref, new))

    def _forget_dentries(self, repo: str, ref: str, paths: list[str]) -> None:
        """Make the kernel look these names up again (what it cached is no longer so)."""
        for path in paths:
            parent, name = names.split(path)
            ino = self._by_key.get(("entry", repo, ref, parent))
            if ino is not None:
                pyfuse3.invalidate_entry_async(ino, name.encode(), ignore_enoent=True)

    def _renamed(self, old: tuple[str, str, str], new: tuple[str, str, str]) -> None:
        """Inodes keep their numbers across a rename: move them (and what is under them) to the
        new paths, as the kernel did with its dentries."""
        repo, ref, path = old
        moved = [
            i for i in self._inodes.values()
            if i.kind == "entry" and (i.repo, i.ref) == (repo, ref)
            and (i.path == path or i.path.startswith(path + "/"))
        ]
        for i in moved:
            del self._by_key[("entry", i.repo, i.ref, i.path)]
        for i in moved:
            i.repo, i.ref = new[0], new[1]
            i.path = new[2] + i.path[len(path) :]
            stale = self._by_key.pop(("entry", i.repo, i.ref, i.path), None)
            if stale is not None and stale != i.ino:
                self._inodes.pop(stale, None)  # the replaced target's inode is gone
            self._by_key[("entry", i.repo, i.ref, i.path)] = i.ino

    # -- the rest -------------------------------------------------------------------------------------

    @_translate
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLOCK
        s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 40  # the object store is the limit, not us
        s.f_files = s.f_ffree = s.f_favail = 1 << 40
        s.f_namemax = names.MAX_COMPONENT
        return s

    async def _xattrs(self, inode: Inode) -> dict[str, bytes]:
        if inode.kind == "root":
            return {"user.pfs.fetched": str(self.fetched).encode()}
        if inode.kind != "entry":
            return {"user.pfs.repo": inode.repo.encode()}
        entry, r = await self._describe(inode)
        out = {
            "user.pfs.repo": inode.repo.encode(),
            "user.pfs.ref": inode.ref.encode(),
            "user.pfs.path": ("/" + inode.path).encode(),
        }
        if r.commit is not None:
            out["user.pfs.commit"] = r.commit.id.encode()
            out["user.pfs.finished"] = b"yes" if r.commit.finished else b"no"
        if isinstance(entry, FileNode):
            out["user.pfs.hash"] = entry.hash.hex().encode()
            out["user.pfs.chunks"] = str(len(await self._io(self.trees.chunks, entry))).encode()
        elif isinstance(entry, DirNode) and entry.root is not None:
            out["user.pfs.hash"] = entry.root.hex().encode()
        elif isinstance(entry, LocalFile):
            out["user.pfs.pending"] = b"yes"  # written here, not yet in a commit
        return out

    @_translate
    async def getxattr(self, ino, name, ctx):
        if not name.startswith(b"user."):
            # No ACLs or security labels here. ENOTSUP (not ENODATA) lets `ls -l` and `cp -a`
            # remember that per device instead of asking about every file.
            raise _fail(errno.ENOTSUP)
        if not name.startswith(b"user.pfs."):
            raise _fail(pyfuse3.ENOATTR)
        value = (await self._xattrs(self._get(ino))).get(name.decode(errors="replace"))
        if value is None:
            raise _fail(pyfuse3.ENOATTR)
        return value

    @_translate
    async def listxattr(self, ino, ctx):
        return [n.encode() for n in await self._xattrs(self._get(ino))]

    @_translate
    async def setxattr(self, ino, name, value, ctx):
        raise _fail(errno.ENOTSUP)

    @_translate
    async def removexattr(self, ino, name, ctx):
        raise _fail(errno.ENOTSUP)

    # -- background: flushing and finishing commits -------------------------------------------------

    async def keep_committing(self) -> None:
        """Start a branch's commit at its first write, send writes as they come (a flush in
        flight gathers the next batch), and finish the commits we started once a branch has
        been quiet for `idle` seconds with no file open for writing."""
        while True:
            await trio.sleep(0.05)
            for r in list(self._refs.values()):
                ws = r.workspace
                if ws is None or not (ws.busy or ws.overlay):
                    continue
                try:
                    if ws.commit_id is None and (ws.writing or ws.ops):
                        await ws.ensure_commit()
                    if ws.ops:
                        await ws.flush()
                    elif not ws.writing and ws.owned and time.monotonic() - ws.changed >= self.idle:
                        await ws.finish()
                except PfsError as e:
                    if isinstance(e, NotFound) and await ws.repo_gone():
                        log.error("%s@%s: the repo is gone: changes not yet saved are dropped", ws.repo, ws.branch)
                        ws.discard()
                    elif str(e) != ws.failing:  # (said once, not at every retry)
                        log.error("cannot write to %s@%s: %s (will retry)", ws.repo, ws.branch, e)
                    ws.failing = str(e)
                else:
                    ws.failing = ""

    async def finish_all(self) -> None:
        """At unmount: everything pending reaches the daemon and our commits are finished."""
        for r in list(self._refs.values()):
            ws = r.workspace
            if ws is not None and ws.busy:
                ws.abandon_writers()  # the kernel is gone: no handle will be closed
                try:
                    await ws.finish()
                except PfsError as e:  # the others may still be saved
                    log.error("%s@%s: changes not saved at unmount: %s", ws.repo, ws.branch, e)
                    self.lost(f"{ws.repo}@{ws.branch}: changes not saved at unmount: {e}")
