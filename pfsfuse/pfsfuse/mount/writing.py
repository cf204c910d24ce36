"""Writing through the mount: copies on write, links and moves stored as references to data the
daemon has (copying nothing), and the background committer that sends each branch's writes and
finishes the commits the mount started."""

from __future__ import annotations

import errno
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable

import msgspec
import pyfuse3
import trio

from pfsfuse.api.types import Copy, Delete, Symlink
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import NameTooLong, NotFound, PfsError
from pfsfuse.metadata.records import DirNode, FileNode, SymlinkNode, link_of
from pfsfuse.mount.boundary import fail
from pfsfuse.mount.inodes import Inode
from pfsfuse.mount.localfile import SPILL, LocalFile, Origin
from pfsfuse.mount.reading import Reader
from pfsfuse.mount.resolve import Ref, Resolver
from pfsfuse.mount.trees import Trees
from pfsfuse.mount.workspace import Workspace, stat_of

log = logging.getLogger("pfsfuse.mount")


def workspace_of(r: Ref | None) -> Workspace:
    """The workspace to write a ref through: EROFS for a commit, or in a read-only mount."""
    if r is None or r.workspace is None:
        raise fail(errno.EROFS)
    return r.workspace


class Writer:
    """Changes through the mount that need more than one workspace call, and the committer."""

    def __init__(
        self,
        resolver: Resolver,
        reader: Reader,
        trees: Trees,
        io: Callable[..., Awaitable],
        tmpdir: str,
        mountpoint: str,
        idle: float,
        lost: Callable[[str], None],
    ):
        self._resolver = resolver
        self._reader = reader
        self._trees = trees
        self._io = io
        self._tmpdir = tmpdir
        self._rescue = tmpdir + ".rescued"  # what an unmount could not save: kept, not deleted
        self._mountpoint = mountpoint
        self._idle = idle
        self._lost = lost

    # -- copy on write

    async def writable(self, ws: Workspace, path: str, entry, truncate: bool, commit: str | None) -> LocalFile:
        """A local file to write `path` through: the one being written, or a copy on write (of
        the file's own content: a header and footer stay with the directory) of the file in
        `commit`. A big file is copied sparsely: its bytes are fetched where they are read."""
        if isinstance(entry, LocalFile):
            async with ws.lock:  # not while a flush is sending its content
                if not entry.dropped:
                    ws.reopened(entry)
                    if truncate:
                        entry.truncate(0)
                    return entry
            # That flush took it: the daemon has it now.
            entry = await self._resolver.entry(await self._resolver.ref(ws.repo, ws.branch), path)
            if not isinstance(entry, FileNode):
                raise fail(errno.ENOENT)
        st = stat_of(entry, time.time())
        f = LocalFile(self._tmpdir, st)
        if not truncate:
            try:
                if type(entry) is FileNode and entry.size > SPILL and commit is not None:
                    chunks = await self._io(self._trees.chunks, entry)
                    f.sparse_copy(entry.size, Origin(entry.hash, commit, chunks, self._reader.chunk_of))
                else:
                    await self._reader.copy_into(f, entry)
            except BaseException:
                f.dropped = True  # nobody has it: its temporary file goes
                f.release()
                raise
            f.stat = st  # opening to write is not writing: the times stay until a write
            f.based_on(entry.hash)
        else:
            f.touch()  # O_TRUNC is a change, as on a disk
        ws.created(path, f)
        return f

    # -- references: links, symlinks to data, moves

    async def hard_link(self, ws: Workspace, src: str, path: str, entry) -> bool:
        """Make `path` another name of the file at `src` of the same branch, sent to the daemon
        at once (it numbers the link). False when it cannot go yet: an earlier change waits for
        a file open for writing."""
        if isinstance(entry, LocalFile) and entry.writers and ws.overlay.get(src) is entry:
            ws.synced(entry)  # being written: the daemon must have it to link it
        await ws.flush()
        if ws.ops:
            return False
        ws.send_next(Copy(path, ws.repo, ws.branch, src, overwrite=False, link=True))
        ws.entries_changed(names.split(path)[0])  # (before the flush: it dates the directory)
        await ws.flush()
        return True

    async def symlink(self, ws: Workspace, parent: Inode, path: str, node: SymlinkNode) -> bool:
        """Make `path` a link to `node.target`; True when it is stored as a reference to the data
        the target names (copying nothing: a regular file once the daemon has it). A directory
        whose paths would grow too long there stays a symlink, and so does a relative link or one
        into its own branch: there the user means a symlink (it must follow later changes)."""
        source = None if self.means_symlink(node.target, parent) else await self.source_of(node.target, parent)
        try:
            referred = source is not None and await self.refer(ws, path, source, shown=node)
        except NameTooLong:
            referred = False
        if referred:
            ws.reshaped.add(path)  # the kernel must look it up again once it is a file
        else:
            ws.put_node(path, node, Symlink(path, node.target, node.stat))
        return referred

    def means_symlink(self, target: str, parent: Inode) -> bool:
        """Whether a link target names a path of the link's own repo and ref (or none in the
        mount): there the user means a symlink, which follows later changes."""
        parts = self._in_mount(target, parent)
        if parts is None:
            return True
        if parent.repo in self._resolver.pinned:
            return parts[0] == parent.repo
        return parts[:2] == [parent.repo, parent.ref]

    def _in_mount(self, target: str, parent: Inode) -> list[str] | None:
        """The components of what a link target names below the mountpoint, or None."""
        if not target.startswith("/"):
            here = [parent.repo] if parent.repo in self._resolver.pinned else [parent.repo, parent.ref]
            target = posixpath.join(self._mountpoint, *here, parent.path, target)
        rel = posixpath.relpath(posixpath.normpath(target), self._mountpoint)
        parts = rel.split("/")
        if rel.startswith("..") or not parts or parts[0] in ("", "."):
            return None
        return parts

    async def source_of(self, target: str, parent: Inode):
        """`reference` of what a link target names, when it is a file or directory in the mount."""
        parts = self._in_mount(target, parent)
        if parts is None:
            return None
        pinned = self._resolver.pinned
        repo = parts[0]
        if repo in pinned:
            ref, path = pinned[repo], "/".join(parts[1:])
        elif len(parts) >= 3:
            ref, path = parts[1], "/".join(parts[2:])
        else:
            return None  # a repo or ref directory itself is not data
        try:
            return await self.reference(repo, ref, names.path(path))
        except (PfsError, pyfuse3.FUSEError):
            return None

    async def reference(self, repo: str, ref: str, path: str):
        """(node, Copy op, workspace) naming what `path` under `ref` holds now, by the commit
        where the daemon has it; pending writes there are sent first. The workspace is the
        branch's when that commit is still open (what it names may change), else None."""
        r = await self._resolver.ref(repo, ref)
        if r.workspace is not None and r.workspace.ops:
            await r.workspace.flush()
            r = await self._resolver.ref(repo, ref)
        entry = await self._resolver.entry(r, path)
        if entry is None or isinstance(entry, LocalFile) or r.commit is None:
            return None  # not there, or still being written: nothing the daemon can refer to
        live = r.workspace if r.commit.finished is None else None
        return entry, Copy(path, repo, r.commit.id, path), live

    async def refer(self, ws: Workspace, path: str, source: tuple, shown=None) -> bool:
        """Log a reference copy of `source` (from `reference`) to `path`, shown to the kernel as
        `shown` (by default what it refers to). One to another branch's open commit goes to the
        daemon at once, while that commit still holds what it names (a later change there would
        change or remove it first); False when it cannot go first (earlier changes in `ws` wait
        for a file open for writing). NameTooLong if a path below a directory would pass the
        limit."""
        node, op, live = source
        op = msgspec.structs.replace(op, path=path)
        if isinstance(node, DirNode) and len(path.encode()) > len(op.src_path.encode()):
            names.check_depth(path, await self._io(self._trees.longest, node))
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

    async def move(self, entry, old_ref: Ref, old_ws: Workspace, old: str, new_ws: Workspace, new: str) -> None:
        """Move `entry` from `old` to `new` (whatever was at `new` is checked and replaced). A
        file being written moves as it is; anything else is referred to at its new path."""
        if isinstance(entry, LocalFile) and entry.writers and old_ws is new_ws:
            old_ws.moved(old, new, entry, Delete(old, missing_ok=True))
            return
        # Files being written in a renamed directory go with it (they have no reference yet).
        writing = [f for f in old_ws.writing if f.path.startswith(old + "/") and old_ws.overlay.get(f.path) is f]
        if writing and new_ws is not old_ws:
            raise fail(errno.EXDEV)
        for f in writing:  # (the rest of the directory is checked by refer)
            if len(f.path.encode()) - len(old.encode()) + len(new.encode()) > names.MAX_PATH:
                raise fail(errno.ENAMETOOLONG)
        source = await self.reference(old_ref.repo, old_ref.ref, old)
        if source is not None and old_ws is new_ws and link_of(source[0]):
            # A name of a hard link (a file, symlink or special file) moves: the new name is one of it.
            source = (source[0], msgspec.structs.replace(source[1], link=True), source[2])
        # None: still being written in another branch, no reference yet
        if source is None or not await self.refer(new_ws, new, source):
            raise fail(errno.EXDEV)
        old_ws.delete(old, Delete(old, missing_ok=True))
        for f in writing:
            old_ws.moved(f.path, new + f.path[len(old) :], f, Delete(f.path, missing_ok=True))

    # -- background: flushing and finishing commits

    async def keep_committing(self) -> None:
        """Start a branch's commit at its first write, send writes as they come (a flush in
        flight gathers the next batch), and finish the commits we started once a branch has
        been quiet for `idle` seconds with no file open for writing."""
        while True:
            await trio.sleep(0.05)
            for ws in self._resolver.workspaces():
                if not (ws.busy or ws.overlay) or time.monotonic() < ws.retry_at:
                    continue
                try:
                    if ws.commit_id is None and (ws.writing or ws.ops):
                        await ws.ensure_commit()
                    if ws.ops and ws.due():
                        await ws.flush()
                    elif not ws.writing and ws.owned and time.monotonic() - ws.changed >= self._idle:
                        await ws.finish()
                except PfsError as e:
                    if isinstance(e, NotFound) and await ws.repo_gone():
                        log.error("%s@%s: the repo is gone: changes not yet saved are dropped", ws.repo, ws.branch)
                        ws.discard()
                    elif ws.failed(e):  # (said once, not at every retry)
                        log.error("cannot write to %s@%s: %s (will retry)", ws.repo, ws.branch, e)
                else:
                    ws.succeeded()

    async def finish_all(self) -> None:
        """At unmount: everything pending reaches the daemon and our commits are finished."""
        for ws in self._resolver.workspaces():
            if ws.busy:
                ws.abandon_writers()  # the kernel is gone: no handle will be closed
                try:
                    await ws.finish()
                except PfsError as e:  # the others may still be saved
                    log.error("%s@%s: changes not saved at unmount: %s", ws.repo, ws.branch, e)
                    self._lost(f"{ws.repo}@{ws.branch}: changes not saved at unmount: {e}")
                    for line in await ws.rescue(self._rescue):
                        self._lost(line)
