"""What the mount shows, resolved: repos and branches, the commit a ref directory shows now, and
the entries under it (through the branch's pending writes, then the commit's tree), listed a page
at a time. Whatever is immutable (finished commits, tree pages) is cached for good."""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import trio

from pfsfuse.api.client import Client
from pfsfuse.api.types import DirNames
from pfsfuse.metadata import refs
from pfsfuse.metadata.errors import NotFound
from pfsfuse.metadata.records import EMPTY_DIR, Commit, DirNode, FileNode, Node
from pfsfuse.mount.boundary import fail
from pfsfuse.mount.inodes import Inode, InodeTable
from pfsfuse.mount.trees import FIRST_PAGE, PAGE, Trees
from pfsfuse.mount.workspace import GONE, Workspace

log = logging.getLogger("pfsfuse.mount")

IMMUTABLE_TTL = 24 * 3600.0  # finished commits never change: let the kernel cache them
MOVING_TTL = 0.5  # branch heads: a new commit shows within a second
RESOLVE_TTL = 0.25  # how long we trust a branch head before asking the daemon again
LISTING_TTL = 1.0  # repos and branches


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


def framed(parent: DirNode, node):
    """`node` as read in `parent`: framed by the directory's header and footer, if it has them."""
    if not parent.framed or not isinstance(node, FileNode) or isinstance(node, Framed):
        return node
    extra = sum(p.size for p in (parent.header, parent.footer) if p is not None)
    return Framed(
        node.size + extra,
        node.hash,
        node.chunks,
        node.executable,
        node.stat,
        header=parent.header,
        footer=parent.footer,
    )


@dataclass
class _Ahead:
    """A plain listing's next page, fetched while the kernel takes this one's names."""

    after: str | None
    done: trio.Event = field(default_factory=trio.Event)
    page: DirNames | None = None


@dataclass
class DirHandle:
    inode: Inode
    listing: list | None  # [(name, entry)] when merged with pending writes, else fetched by the page
    node: DirNode  # the directory itself (its header and footer frame its files)
    page: tuple = (0, None)  # (index of its first entry, entries): the page being read
    ahead: str | None = None  # the name after which the next page is being fetched
    names: tuple = (0, None)  # (index of its first entry, DirNames): a plain listing's page
    names_ahead: _Ahead | None = None  # the next one, being fetched
    prefetched: int = 0  # entries whose small files were fetched ahead (Reader.prefetch_listed)
    # Pending writes in it: `listing` is merged at the first readdir (an opendir only to fsync
    # the directory, as sqlite does, costs no listing).
    merge: bool = False
    # What the kernel's cached copy of the listing needs (listings.py): the directory's key
    # (None: not to be cached), whether the kernel serves it from its cache, whether a handle
    # of another version was open meanwhile, and how the reader listed it after the first read.
    key: tuple | None = None
    kept: bool = False
    shared: bool = False
    plain: bool = False
    stated: bool = False


class Resolver:
    """Refs and the entries under them, as the mount shows them now."""

    nursery: trio.Nursery  # for pages fetched ahead; set by the runner

    def __init__(
        self,
        client: Client,
        trees: Trees,
        io: Callable[..., Awaitable],
        inodes: InodeTable,
        tmpdir: str,
        repos: list[str] | None,
        pinned: dict[str, str],
        read_only: bool,
        lost: Callable[[str], None],
    ):
        self.client = client
        self.trees = trees
        self._io = io
        self._inodes = inodes
        self._tmpdir = tmpdir
        self.only = set(repos) if repos else None
        self.pinned = pinned  # repo -> ref shown directly at MNT/<repo>
        self.read_only = read_only
        self._lost = lost
        self._refs: dict[tuple[str, str], Ref] = {}
        self._listings: dict[tuple, tuple[float, list[str]]] = {}

    @property
    def growable(self) -> bool:
        """Whether mkdir at the top makes repos and in a repo makes branches: not in a read-only
        mount, nor one that shows commits (-c) at the top."""
        return not self.read_only and not self.pinned

    # -- repos and branches

    async def _listing(self, key: tuple, fetch) -> list[str]:
        hit = self._listings.get(key)
        if hit is None or time.monotonic() - hit[0] > LISTING_TTL:
            hit = (time.monotonic(), await self._io(fetch))
            self._listings[key] = hit
        return hit[1]

    async def repos(self) -> list[str]:
        if self.pinned:
            return sorted(self.pinned)
        found = await self._listing(("repos",), lambda: [r.name for r in self.client.list_repo()])
        return [r for r in found if self.only is None or r in self.only]

    async def branches(self, repo: str) -> list[str]:
        return await self._listing(("branches", repo), lambda: [b.name for b in self.client.list_branch(repo)])

    async def make_repo(self, name: str) -> None:
        if self.only is not None and name not in self.only:
            raise fail(errno.EPERM)  # it would not show in this mount
        await self._io(self.client.create_repo, name)
        self._listings.pop(("repos",), None)

    async def make_branch(self, repo: str, name: str) -> Ref:
        """A new branch with no commits yet (its first write starts one)."""
        base, steps = refs.parse(name)
        if refs.is_commit_id(base) or steps:
            raise fail(errno.EINVAL)  # the name of a commit or an ancestry ref, not a branch's
        self._listings.pop(("branches", repo), None)  # made elsewhere a moment ago?
        if name in await self.branches(repo):
            raise fail(errno.EEXIST)
        await self._io(self.client.create_branch, repo, name)
        self._listings.pop(("branches", repo), None)
        return await self.ref(repo, name)

    # -- refs and their entries

    async def ref(self, repo: str, ref: str) -> Ref:
        """The state of a ref directory, re-resolved when it may have moved."""
        key = (repo, ref)
        r = self._refs.get(key)
        if r is None:
            base, steps = refs.parse(ref)
            branch = not refs.is_commit_id(base) and steps == 0
            r = Ref(repo, ref, moving=not refs.is_commit_id(base), branch=branch)
            if branch and not self.read_only:
                r.workspace = Workspace(self.client, repo, ref, self._tmpdir, self._io)
                r.workspace.on_reshaped = functools.partial(self._inodes.invalidate, repo, ref)
                r.workspace.on_lost = self._lost
                r.workspace.on_listings = self.trees.seed
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
            if stale and not expired and self._take_written(r):
                return r
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

    @staticmethod
    def _take_written(r: Ref) -> bool:
        """Whether our own last write (which answered with the tree it left) tells what the ref
        shows now: the same open commit, with that tree. Saves a round trip after each flush."""
        ws = r.workspace
        assert ws is not None
        w = ws.written
        if w is None or w[0] != ws.flushed or r.commit is None or r.commit.id != w[1] or r.commit.finished:
            return False
        r.commit = msgspec.structs.replace(r.commit, tree=w[2])
        r.flushed = ws.flushed
        return True

    def workspaces(self) -> list[Workspace]:
        """The workspaces of the branches the mount has shown."""
        return [r.workspace for r in list(self._refs.values()) if r.workspace is not None]

    async def entry(self, r: Ref, path: str):
        """What is at `path` under a ref: a node, a LocalFile being written, or None."""
        ws = r.workspace
        if ws is not None and r.flushed != ws.flushed:
            # A flush since the caller resolved `r`: the overlay no longer holds what it sent,
            # so the commit from before it would miss that (a rename seen as ENOENT).
            r = await self.ref(r.repo, r.ref)
        if not path:
            return r.root
        if ws is not None:
            found = ws.resolve(path)
            if found[0] == "entry":
                return None if found[1] is GONE else found[1]
            if found[0] == "under":
                return await self._walk(found[1], found[2])
        return await self._walk(r.root, path)

    async def _walk(self, d: DirNode, path: str):
        parent: DirNode = d
        node: Node | None = d
        for part in path.split("/"):
            if not isinstance(node, DirNode):
                return None
            parent = node
            hit = self.trees.cached_child(node, part)  # most lookups: no thread, no daemon
            node = hit[0] if hit is not None else await self._io(self.trees.child, node, part)
        return framed(parent, node)

    # -- directories

    async def merged(self, r: Ref, path: str) -> list:
        """The entries of a branch's directory with its pending writes applied. A flush while
        the directory is read may drop pending entries from the overlay: then read it again."""
        ws = r.workspace
        assert ws is not None  # (only a branch's directory has pending writes)
        while True:
            flushed = ws.flushed
            entry = await self.entry(await self.ref(r.repo, r.ref), path)
            if not isinstance(entry, DirNode):
                raise fail(errno.ENOENT if entry is None else errno.ENOTDIR)
            base = await self._io(self._all_entries, entry)
            if ws.flushed == flushed:
                return ws.merge(path, base)

    def _all_entries(self, d: DirNode) -> list:
        out, after = [], None
        while page := self.trees.page(d, after):
            out.extend(page)
            after = page[-1][0]
        return out

    async def page(self, h: DirHandle, index: int) -> list:
        """Entries of a big directory from `index` on: readers go forward a page at a time, so
        one page is kept; a seek backwards starts over."""
        start, page = h.page
        if page is None or index < start:
            start, page = 0, await self._io(self.trees.page, h.node, None, FIRST_PAGE)
        while page and index >= start + len(page):
            start, page = start + len(page), await self._io(self.trees.page, h.node, page[-1][0])
        h.page = (start, page)
        if index and len(page) == (FIRST_PAGE if start == 0 else PAGE) and h.ahead != page[-1][0]:
            # Fetch the next page while the kernel takes this one's entries (not at the first
            # request: a reader that goes on without stats goes on with names only).
            h.ahead = page[-1][0]
            self.nursery.start_soon(self._page_ahead, h.node, h.ahead)
        return page[index - start :] if page else []

    async def names(self, h: DirHandle, index: int) -> tuple[DirNames, int]:
        """The page of a big directory's plain listing holding `index` (or its last page, when
        `index` is past the end), and where `index` is in it."""
        start, page = h.names
        if page is None or index < start:
            start, page = 0, await self._names_after(h, None)
        while len(page.names) == PAGE and index >= start + PAGE:
            start, page = start + PAGE, await self._names_after(h, page.names[-1])
        h.names = (start, page)
        if len(page.names) == PAGE and (h.names_ahead is None or h.names_ahead.after != page.names[-1]):
            h.names_ahead = _Ahead(page.names[-1])
            self.nursery.start_soon(self._names_ahead, h.node, h.names_ahead)
        return page, index - start

    def names_soon(self, h: DirHandle) -> None:
        """Start fetching a big directory's first names page, at its listing's first batch
        (which has attributes, whoever reads): a reader that goes on plainly wants it next."""
        if h.names_ahead is None and h.names[1] is None:
            h.names_ahead = _Ahead(None)
            self.nursery.start_soon(self._names_ahead, h.node, h.names_ahead)

    async def _names_after(self, h: DirHandle, after: str | None) -> DirNames:
        ahead = h.names_ahead
        if ahead is not None and ahead.after == after:
            await ahead.done.wait()
            if ahead.page is not None:
                return ahead.page
        return await self._io(self.trees.names, h.node, after)

    async def _names_ahead(self, d: DirNode, ahead: _Ahead) -> None:  # (a task)
        try:
            ahead.page = await self._io(self.trees.names, d, ahead.after)
        except Exception as e:  # noqa: BLE001 - the reader asks again when it gets there
            log.warning("fetching a listing page ahead failed: %s", e)
        finally:
            ahead.done.set()

    async def _page_ahead(self, d: DirNode, after: str) -> None:
        try:
            await self._io(self.trees.page, d, after)
        except Exception as e:  # noqa: BLE001 - the reader asks again when it gets there
            log.warning("fetching a listing page ahead failed: %s", e)
