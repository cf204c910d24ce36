"""The FUSE file system: repos, refs and files of the store as a directory tree.

    MNT/<repo>/<branch>/<path>   the branch head, following new commits; writable
    MNT/<repo>/<commit>/<path>   a commit, immutable (also any ref: master^2, master~1)

Handlers are thin: they find the inode's entry (through the branch's pending writes, then the
commit's tree), act, and translate errors to errnos at the boundary. The work is done by the
collaborators they share: the inode table (inodes.py), what refs and paths resolve to
(resolve.py), reading file contents (reading.py), writing and committing (writing.py) and
attributes (attrs.py). Blocking calls (the daemon, the object store) run in worker threads.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import stat
import time
from collections.abc import Callable

import pyfuse3
import trio

from pfsfuse.api.client import Client
from pfsfuse.api.types import Delete, Mkdir, Mknod
from pfsfuse.metadata import names, refs
from pfsfuse.metadata.errors import NotFound, PfsError
from pfsfuse.metadata.records import EMPTY_DIR, SPECIAL_MODES, DirNode, FileNode, SpecialNode, Stat, SymlinkNode
from pfsfuse.mount.attrs import Attrs, file_type
from pfsfuse.mount.boundary import Threads, component, fail, translate
from pfsfuse.mount.inodes import KEPT, Inode, InodeTable
from pfsfuse.mount.listings import KernelListings, key_of
from pfsfuse.mount.localfile import LocalFile
from pfsfuse.mount.reading import Handle, Reader
from pfsfuse.mount.resolve import DirHandle, Ref, Resolver, framed
from pfsfuse.mount.trees import Trees
from pfsfuse.mount.workspace import Workspace
from pfsfuse.mount.writing import Writer, workspace_of


class Handles(dict):
    """Open files and directories by the number the kernel knows them by."""

    def __init__(self):
        super().__init__()
        self._next = itertools.count(1)

    def add(self, h) -> int:
        fh = next(self._next)
        self[fh] = h
        return fh

    def of(self, inode: Inode):
        """An open handle of `inode`, if any."""
        return next((h for h in self.values() if h.inode is inode), None)


class Filesystem(pyfuse3.Operations):
    enable_writeback_cache = False
    enable_readdirplus_auto = True
    # We drop setuid and setgid ourselves (on a write, a truncate, a chown), so that the kernel
    # does not ask for a file's security.capability before each write (pfsfuse's pyfuse3 patch).
    enable_killpriv_v2 = True

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
        kept_inodes: int = KEPT,
    ):
        super().__init__()
        self.client = client
        self.mountpoint = os.path.abspath(mountpoint)
        self.tmpdir = tmpdir
        self.trees = Trees(client)
        io = Threads().run
        self.inodes = InodeTable(kept_inodes)
        self.handles = Handles()
        self.resolver = Resolver(client, self.trees, io, self.inodes, tmpdir, repos, pinned or {}, read_only, lost)
        self.reader = Reader(self.trees, io)
        self.writer = Writer(self.resolver, self.reader, self.trees, io, tmpdir, self.mountpoint, idle, lost)
        self.attrs = Attrs(self.resolver, self.reader, self.writer, self.trees, io)
        self.listings = KernelListings(self.enable_readdirplus_auto)

    @property
    def nursery(self) -> trio.Nursery:
        """Where read-ahead and pages fetched ahead run; set by the runner."""
        return self.reader.nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery) -> None:
        self.reader.nursery = self.resolver.nursery = nursery

    @property
    def fetched(self) -> int:
        """Chunk bytes fetched, read-ahead included."""
        return self.reader.fetched

    async def keep_committing(self) -> None:
        """Run for the mount's life: each branch's writes reach the daemon (Writer)."""
        await self.writer.keep_committing()

    async def finish_all(self) -> None:
        """At unmount: everything pending reaches the daemon and our commits are finished."""
        await self.writer.finish_all()

    # -- what handlers share (a view of a datum overrides some of them) ----------------------------

    async def describe(self, inode: Inode):
        """(entry, ref) of an inode; entry None for the root and repo directories."""
        if inode.kind != "entry":
            return None, None
        r = await self.resolver.ref(inode.repo, inode.ref)
        entry = await self.resolver.entry(r, inode.path)
        if entry is None:
            raise fail(errno.ENOENT)
        return entry, r

    async def child(self, parent: Inode, name: str):
        """(inode, entry, ref) of `name` in the directory `parent`."""
        resolver = self.resolver
        if name == ".":
            entry, r = await self.describe(parent)
            return parent, entry, r
        if parent.kind == "root":
            if name not in await resolver.repos():
                raise fail(errno.ENOENT)
            if name in resolver.pinned:
                r = await resolver.ref(name, resolver.pinned[name])
                return self.inodes.of("entry", name, resolver.pinned[name], ""), r.root, r
            return self.inodes.of("repo", name), None, None
        if parent.kind == "repo":
            try:
                refs.parse(name)
            except PfsError:
                raise fail(errno.ENOENT) from None
            if name not in await resolver.branches(parent.repo):
                base, steps = refs.parse(name)
                if not refs.is_commit_id(base) and steps == 0:
                    raise fail(errno.ENOENT)  # not a branch, a commit or an ancestry ref
            r = await resolver.ref(parent.repo, name)
            return self.inodes.of("entry", parent.repo, name, ""), r.root, r
        r = await resolver.ref(parent.repo, parent.ref)
        path = names.join(parent.path, name)
        entry = await resolver.entry(r, path)
        if entry is None:
            raise fail(errno.ENOENT)
        linkid = _link_of(entry)
        if not linkid:
            return self.inodes.of("entry", parent.repo, parent.ref, path), entry, r
        inode = self.inodes.linked(parent.repo, parent.ref, path, linkid)
        if inode.path != path:
            # The link's reads and writes go through one name (one being written, perhaps).
            there = await resolver.entry(r, inode.path)
            if _link_of(there) == linkid:
                entry = there
            else:
                inode.path = path
        return inode, entry, r

    def attributes(
        self, inode: Inode, entry, r: Ref | None, a: pyfuse3.EntryAttributes | None = None
    ) -> pyfuse3.EntryAttributes:
        """The attributes the kernel sees (see Attrs.of)."""
        return self.attrs.of(inode, entry, r, a)

    async def xattrs(self, inode: Inode) -> dict[str, bytes]:
        entry, r = await self.describe(inode) if inode.kind == "entry" else (None, None)
        out = await self.attrs.extended(inode, entry, r)
        if inode.kind == "root":  # how many inodes the kernel holds of us: bounded (inodes.KEPT)
            out["user.pfs.inodes"] = str(len(self.inodes)).encode()
            out["user.pfs.readdirs"] = str(self.listings.reads).encode()  # the rest: the kernel's cache
        return out

    async def open_node(self, inode: Inode, entry: FileNode, r: Ref) -> pyfuse3.FileInfo:
        """Open a committed file for reading."""
        fh = self.handles.add(await self.reader.open(inode, entry, r))
        # Pages of a finished commit stay valid forever; a branch's file may change.
        return pyfuse3.FileInfo(fh=fh, keep_cache=not r.moving)

    async def _parent(self, parent_ino: int, name: bytes) -> tuple[Inode, Ref, Workspace, str]:
        """The directory a name is made or removed in, its ref and workspace, and the path."""
        parent = self.inodes.get(parent_ino)
        if parent.kind != "entry":
            raise fail(errno.EROFS if parent.kind == "repo" or self.resolver.read_only else errno.EPERM)
        entry, r = await self.describe(parent)
        ws = workspace_of(r)
        if not isinstance(entry, DirNode):
            raise fail(errno.ENOTDIR)
        path = names.join(parent.path, component(name))
        if len(path.encode()) > names.MAX_PATH:  # each name fits, but not the path they make
            raise fail(errno.ENAMETOOLONG)
        return parent, r, ws, path

    def _new_inode(self, parent: Inode, path: str) -> Inode:
        inode = self.inodes.of("entry", parent.repo, parent.ref, path)
        inode.lookups += 1
        return inode

    # -- lookups and attributes -----------------------------------------------------------------

    @translate
    async def lookup(self, parent_ino, name, ctx=None):
        parent = self.inodes.get(parent_ino)
        text = component(name) if name not in (b".", b"..") else name.decode()
        inode, entry, r = await self.child(parent, text)
        inode.lookups += 1
        self.listings.looked_up(parent, entry)
        return self.attributes(inode, entry, r)

    async def forget(self, inode_list):
        self.inodes.forget(inode_list)

    @translate
    async def getattr(self, ino, ctx=None):
        inode = self.inodes.get(ino)
        try:
            entry, r = await self.describe(inode)
        except (NotFound, pyfuse3.FUSEError) as e:
            # Gone from its branch (the file or the branch deleted) but open: fstat answers from
            # the handle, as a disk does for an unlinked file.
            h = self.handles.of(inode)
            if h is None or getattr(e, "errno", errno.ENOENT) != errno.ENOENT:
                raise
            a = self.attributes(inode, h.file or h.node, h.ref)
            a.st_nlink = 0  # it has no name left
            return a
        return self.attributes(inode, entry, r)

    @translate
    async def setattr(self, ino, attr, fields, fh, ctx):
        inode = self.inodes.get(ino)
        entry, r = await self.describe(inode)
        if r is None:
            raise fail(errno.EPERM)
        entry = await self.attrs.change(workspace_of(r), inode.path, entry, r, attr, fields, ctx)
        return self.attributes(inode, entry, r)

    @translate
    async def readlink(self, ino, ctx=None):
        inode = self.inodes.get(ino)
        entry, _ = await self.describe(inode)
        if isinstance(entry, SymlinkNode):
            return entry.target.encode()
        if inode.link:  # the kernel may still hold it as the symlink it was made as
            return inode.link.encode()
        raise fail(errno.EINVAL)

    @translate
    async def statfs(self, ctx):
        return self.attrs.statfs()

    @translate
    async def getxattr(self, ino, name, ctx):
        text = _user_xattr(name)
        inode = self.inodes.get(ino)
        if text.startswith(names.XATTR_OWN_PREFIX):
            value = (await self.xattrs(inode)).get(text)
        else:
            value = dict(await self._stored_xattrs(inode)).get(text)
        if value is None:
            raise fail(pyfuse3.ENOATTR)
        return value

    @translate
    async def listxattr(self, ino, ctx):
        # The stored ones only: the mount's own (user.pfs.*) are read by name, so that `cp -a`
        # and `rsync -aX` out of a mount make copies without them, as from a disk.
        return [n.encode() for n, _ in await self._stored_xattrs(self.inodes.get(ino))]

    @translate
    async def setxattr(self, ino, name, value, ctx):
        await self._set_xattr(ino, name, value)

    @translate
    async def removexattr(self, ino, name, ctx):
        await self._set_xattr(ino, name, None)

    async def _stored_xattrs(self, inode: Inode) -> tuple[tuple[str, bytes], ...]:
        if inode.kind != "entry":
            return ()
        entry, r = await self.describe(inode)
        return self.attrs.current_stat(inode.path, entry, r).xattrs or ()

    async def _set_xattr(self, ino: int, name: bytes, value: bytes | None) -> None:
        text = _user_xattr(name)
        if text.startswith(names.XATTR_OWN_PREFIX):
            # The mount's own describe the entry: setting or removing one is accepted and changes
            # nothing, so that a copy made out of a mount with them (`rsync -aX`) comes back in.
            return
        inode = self.inodes.get(ino)
        if inode.kind != "entry":
            raise fail(errno.ENOTSUP)  # the root and the repos' directories keep nothing
        entry, r = await self.describe(inode)
        self.attrs.set_xattr(workspace_of(r), inode.path, entry, r, text, value)

    # -- directories ------------------------------------------------------------------------------

    @translate
    async def opendir(self, ino, ctx=None):
        inode = self.inodes.get(ino)
        if inode.kind == "root":
            h = DirHandle(inode, [(n, None) for n in await self.resolver.repos()], EMPTY_DIR)
        elif inode.kind == "repo":
            h = DirHandle(inode, [(n, None) for n in await self.resolver.branches(inode.repo)], EMPTY_DIR)
        else:
            entry, r = await self.describe(inode)
            if not isinstance(entry, DirNode):
                raise fail(errno.ENOTDIR)
            ws = r.workspace
            if ws is not None and ws.children.get(inode.path):
                # Pending writes in this directory: list it whole, merged (at the first readdir).
                h = DirHandle(inode, None, entry, merge=True)
            else:
                h = DirHandle(inode, None, entry, key=key_of(entry))
        others = [o for o in self.handles.values() if isinstance(o, DirHandle) and o.inode is inode]
        return self.listings.opened(h, self.handles.add(h), others)

    @translate
    async def readdir(self, fh, start_id, token):
        h = self.handles[fh]
        inode = h.inode
        r = await self.resolver.ref(inode.repo, inode.ref) if inode.kind == "entry" else None
        attr = None
        index = start_id
        # A plain READDIR (the kernel's choice when the reader does not stat what it lists, as
        # find and ls -f): names, numbers and types only, and no inodes for the kernel to keep.
        # A pyfuse3 without the adaptive READDIRPLUS always lists with attributes.
        plus = getattr(token, "plus", True)
        self.listings.read(h, start_id, plus)
        if h.merge and h.listing is None:
            assert r is not None  # (only a branch's directory has pending writes)
            h.listing = await self.resolver.merged(r, inode.path)
        if r is not None and h.listing is None and self.trees.paged(h.node):
            if not plus:
                return await self._list_names(token, h, index)
            if index == 0:
                self.resolver.names_soon(h)
        while True:
            if h.listing is not None:
                batch = h.listing[index:]
            else:
                batch = await self.resolver.page(h, index)
            if not batch:
                return
            if r is not None and index >= h.prefetched:
                h.prefetched = index + self.reader.prefetch_listed(batch)
            if not plus and r is not None:
                index = self._list_plain(token, inode, batch, index)
                if index is None or h.listing is not None:
                    return
                continue
            for name, entry in batch:
                if r is not None:  # a directory of a commit: its entries are at hand
                    path = names.join(inode.path, name)
                    linkid = _link_of(entry)
                    if linkid:
                        child = self.inodes.linked(inode.repo, inode.ref, path, linkid)
                    else:
                        child = self.inodes.of("entry", inode.repo, inode.ref, path)
                    entry, child_ref = framed(h.node, entry), r
                else:
                    child, entry, child_ref = await self.child(inode, name)
                attr = self.attributes(child, entry, child_ref, attr if r is not None else None)
                if not pyfuse3.readdir_reply(token, name.encode(), attr, index + 1):
                    return
                if plus:
                    child.lookups += 1
                index += 1
            if h.listing is not None:
                return

    def _list_plain(self, token, inode: Inode, batch, index: int) -> int | None:
        """Send `batch` of a plain listing from `index`; the index to go on from, or None once
        the kernel's buffer is full."""
        for lo in range(0, len(batch), PLAIN_BATCH):
            part = batch[lo : lo + PLAIN_BATCH]
            names, types = [name for name, _ in part], [file_type(entry) for _, entry in part]
            sent = self._reply_plain(token, inode, names, types, [_link_of(entry) or 0 for _, entry in part], index)
            index += sent
            if sent < len(part):
                return None
        return index

    async def _list_names(self, token, h: DirHandle, index: int) -> None:
        """A plain listing of a big directory from `index`: its pages of names, types and link
        ids, which the daemon reads and sends without the nodes (decoding those was most of
        the mount's work for find and ls -f)."""
        while True:
            page, at = await self.resolver.names(h, index)
            if at >= len(page.names):
                return
            if index >= h.prefetched:
                h.prefetched = index + self.reader.prefetch_names(page, at)
            end = min(at + PLAIN_BATCH, len(page.names))
            sent = self._reply_plain(token, h.inode, page.names[at:end], page.types[at:end], page.links[at:end], index)
            index += sent
            if sent < end - at:
                return

    def _reply_plain(
        self, token, inode: Inode, names: list[str], types: list[int], links: list[int], index: int
    ) -> int:
        """Offer entries of a plain listing to the kernel from `index`: how many its buffer took."""
        encoded, inos = self.inodes.numbers(inode.repo, inode.ref, inode.path, names, links)
        if _REPLY_NAMES is not None:  # pfsfuse's pyfuse3: the whole batch in one call
            return _REPLY_NAMES(token, encoded, inos, types, 0, index)
        attr = pyfuse3.EntryAttributes()
        for i, (name, ino, kind) in enumerate(zip(encoded, inos, types, strict=True)):
            attr.st_ino, attr.st_mode = ino, kind
            if not pyfuse3.readdir_reply(token, name, attr, index + i + 1):
                return i
        return len(encoded)

    @translate
    async def releasedir(self, fh):
        self.listings.closed(self.handles.pop(fh))

    @translate
    async def mkdir(self, parent_ino, name, mode, ctx):
        top = self.inodes.get(parent_ino)
        if top.kind in ("root", "repo") and self.resolver.growable:
            text = component(name)
            if top.kind == "root":
                await self.resolver.make_repo(text)
                inode, entry, r = self.inodes.of("repo", text), None, None
            else:
                r = await self.resolver.make_branch(top.repo, text)
                inode, entry = self.inodes.of("entry", top.repo, text, ""), r.root
            inode.lookups += 1
            return self.attributes(inode, entry, r)
        parent, r, ws, path = await self._parent(parent_ino, name)
        if await self.resolver.entry(r, path) is not None:
            raise fail(errno.EEXIST)
        node = DirNode(stat=_new_stat(mode, ctx), subdirs=0)
        ws.put_node(path, node, Mkdir(path, node.stat))
        ws.subdirs_changed(parent.path, 1)
        ws.entries_changed(parent.path)
        return self.attributes(self._new_inode(parent, path), node, r)

    @translate
    async def mknod(self, parent_ino, name, mode, rdev, ctx):
        """A FIFO, socket or device node (a regular file, as `mknod` may make, is a create)."""
        parent, r, ws, path = await self._parent(parent_ino, name)
        if await self.resolver.entry(r, path) is not None:
            raise fail(errno.EEXIST)
        kind = next((k for k, bits in SPECIAL_MODES.items() if stat.S_IFMT(mode) == bits), None)
        if kind is None:
            if not stat.S_ISREG(mode):
                raise fail(errno.EINVAL)
            f = LocalFile(self.tmpdir, _new_stat(mode, ctx))
            ws.created(path, f)
            ws.closed(f, wrote=True)  # not open: an empty file, logged now
            ws.entries_changed(parent.path)
            return self.attributes(self._new_inode(parent, path), f, r)
        node = SpecialNode(kind, rdev if kind in ("char", "block") else 0, _new_stat(mode, ctx))
        ws.put_node(path, node, Mknod(path, node.kind, node.rdev, node.stat))
        ws.entries_changed(parent.path)
        return self.attributes(self._new_inode(parent, path), node, r)

    @translate
    async def rmdir(self, parent_ino, name, ctx):
        parent, r, ws, path = await self._parent(parent_ino, name)
        entry = await self.resolver.entry(r, path)
        if entry is None:
            raise fail(errno.ENOENT)
        if not isinstance(entry, DirNode):
            raise fail(errno.ENOTDIR)
        if await self.resolver.merged(r, path):
            raise fail(errno.ENOTEMPTY)
        ws.delete(path, Delete(path, missing_ok=True))
        ws.subdirs_changed(parent.path, -1)
        ws.entries_changed(parent.path)

    # -- files --------------------------------------------------------------------------------------

    @translate
    async def open(self, ino, flags, ctx=None):
        inode = self.inodes.get(ino)
        entry, r = await self.describe(inode)
        if isinstance(entry, DirNode):
            raise fail(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR):
            ws = workspace_of(r)
            commit = r.commit.id if r.commit is not None else None
            f = await self.writer.writable(ws, inode.path, entry, bool(flags & os.O_TRUNC), commit)
            h = Handle(inode, r, file=f, wrote=True, drops_privs=ctx.uid != 0)
            if flags & os.O_TRUNC:
                self._drop_privs(h)
            return pyfuse3.FileInfo(fh=self.handles.add(h))
        if isinstance(entry, LocalFile):
            entry.handles += 1
            return pyfuse3.FileInfo(fh=self.handles.add(Handle(inode, r, file=entry)))
        return await self.open_node(inode, entry, r)

    @translate
    async def read(self, fh, off, size):
        # The hot path (a request per 1 MiB): no await here but for the chunks themselves.
        h = self.handles[fh]
        if h.file is not None:
            if h.file.holes:  # a sparse copy: what it does not hold comes from the committed file
                await h.file.fill(off, off + size, ahead=off == h.next_read)
                h.next_read = off + size
            return h.file.pread(off, size)
        end = min(off + size, h.node.size)
        if off >= end:
            return b""
        first = bisect.bisect_right(h.starts, off) - 1
        last = bisect.bisect_right(h.starts, end - 1) - 1
        reader = self.reader
        if off == h.next_read or first == 0:
            reader.read_ahead(h.chunks, last + 1)
        h.next_read = end
        parts = []
        for i in range(first, last + 1):
            data = await reader.chunk(h.chunks[i])
            lo = max(0, off - h.starts[i])
            hi = min(len(data), end - h.starts[i])
            parts.append(data if (lo, hi) == (0, len(data)) else memoryview(data)[lo:hi])
        # A chunk read from a local pack is a view of its mapping: a request within one chunk is
        # answered from the page cache without a copy here, and one across chunks with one copy.
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @translate
    async def create(self, parent_ino, name, mode, flags, ctx=None):
        parent, r, ws, path = await self._parent(parent_ino, name)
        existing = await self.resolver.entry(r, path)
        if isinstance(existing, DirNode):
            raise fail(errno.EISDIR)
        f = LocalFile(self.tmpdir, _new_stat(mode, ctx))
        ws.created(path, f)
        if existing is None:
            ws.entries_changed(parent.path)
        inode = self._new_inode(parent, path)
        fh = self.handles.add(Handle(inode, r, file=f, wrote=True, drops_privs=ctx.uid != 0))
        return pyfuse3.FileInfo(fh=fh), self.attributes(inode, f, r)

    @translate
    async def write(self, fh, off, buf):
        h = self.handles[fh]
        if h.file is None or not h.wrote:
            raise fail(errno.EBADF)
        self._drop_privs(h)
        n = h.file.pwrite(off, buf)
        h.ref.workspace.changed = time.monotonic()
        return n

    def _drop_privs(self, h: Handle) -> None:
        """A write, fallocate or truncating open through `h`: as on a disk, the file loses setuid
        and setgid unless root opened it."""
        if not (h.drops_privs and h.file is not None and h.file.stat.mode & _PRIVS):
            return
        ws = h.ref.workspace if h.ref is not None else None
        assert ws is not None  # (a writer's handle, in a branch)
        if self.attrs.drop_privs(ws, h.file):
            pyfuse3.invalidate_inode(h.inode.ino, attr_only=True)  # the kernel's copy still has them

    @translate
    async def fallocate(self, fh, mode, off, length):
        h = self.handles[fh]
        if h.file is None or not h.wrote:
            raise fail(errno.EBADF)
        self._drop_privs(h)
        h.file.allocate(mode, off, length)
        h.ref.workspace.changed = time.monotonic()

    @translate
    async def flush(self, fh):
        """close(2): a writer learns of changes to its branch that the daemon refused."""
        h = self.handles[fh]
        if h.wrote:
            h.report_refused()

    @translate
    async def fsync(self, fh, datasync):
        """Durable means in the daemon's open commit, even for a file still open for writing."""
        h = self.handles[fh]
        ws = h.ref.workspace
        if ws is None:
            return
        f = h.file
        if f is not None and f.writers and ws.overlay.get(f.path) is f:
            ws.synced(f)
        await ws.flush()
        h.report_refused()

    @translate
    async def release(self, fh):
        h = self.handles.pop(fh)
        if h.file is not None:
            ws = h.ref.workspace
            if ws is not None:
                ws.closed(h.file, h.wrote)
            else:
                h.file.handles -= 1
                h.file.release()

    @translate
    async def unlink(self, parent_ino, name, ctx):
        parent, r, ws, path = await self._parent(parent_ino, name)
        entry = await self.resolver.entry(r, path)
        if entry is None:
            raise fail(errno.ENOENT)
        if isinstance(entry, DirNode):
            raise fail(errno.EISDIR)
        ws.delete(path, Delete(path, missing_ok=True))
        ws.entries_changed(parent.path)
        if _link_of(entry):  # its other names count one less: the daemon counts them
            self.inodes.unnamed(r.repo, r.ref, path)
            try:
                await ws.flush()
            except PfsError:
                pass  # the name is gone here; the committer sends it when it can

    # -- links and renames --------------------------------------------------------------------------

    @translate
    async def symlink(self, parent_ino, name, target, ctx):
        parent, r, ws, path = await self._parent(parent_ino, name)
        if await self.resolver.entry(r, path) is not None:
            raise fail(errno.EEXIST)
        try:
            text = names.link_target(target.decode())
        except UnicodeDecodeError:
            raise fail(errno.EINVAL) from None  # the store keeps text (UTF-8) targets
        node = SymlinkNode(text, _new_stat(0o777, ctx))  # what the kernel must see now: it asked for a symlink
        referred = await self.writer.symlink(ws, parent, path, node)
        ws.entries_changed(parent.path)
        inode = self._new_inode(parent, path)
        if referred:
            inode.link = text
        return self.attributes(inode, node, r)

    @translate
    async def link(self, ino, new_parent_ino, new_name, ctx):
        inode = self.inodes.get(ino)
        parent, r, ws, path = await self._parent(new_parent_ino, new_name)
        if await self.resolver.entry(r, path) is not None:
            raise fail(errno.EEXIST)
        if inode.kind == "entry" and (inode.repo, inode.ref) == (parent.repo, parent.ref):
            # Within a branch, a link is another name of the file (stored so, copying nothing).
            entry, _ = await self.describe(inode)
            if isinstance(entry, DirNode):
                raise fail(errno.EPERM)
            if not await self.writer.hard_link(ws, inode.path, path, entry):
                raise fail(errno.EXDEV)
            r = await self.resolver.ref(parent.repo, parent.ref)
            entry = await self.resolver.entry(r, path)
            linkid = _link_of(entry)
            if not linkid:
                raise fail(errno.EIO)  # (the daemon refused it: said in the log)
            linked = self.inodes.linked(inode.repo, inode.ref, inode.path, linkid)
            linked = self.inodes.linked(inode.repo, inode.ref, path, linkid)
            linked.lookups += 1
            return self.attributes(linked, entry, r)
        # Between branches or commits: a copy, by reference.
        source = await self.writer.reference(inode.repo, inode.ref, inode.path) if inode.kind == "entry" else None
        if source is None:
            raise fail(errno.EPERM)
        if not await self.writer.refer(ws, path, source):
            raise fail(errno.EXDEV)
        ws.entries_changed(parent.path)
        return self.attributes(self._new_inode(parent, path), source[0], r)

    @translate
    async def rename(self, old_parent_ino, old_name, new_parent_ino, new_name, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        old_parent, old_ref, old_ws, old = await self._parent(old_parent_ino, old_name)
        new_parent, new_ref, new_ws, new = await self._parent(new_parent_ino, new_name)
        entry = await self.resolver.entry(old_ref, old)
        if entry is None:
            raise fail(errno.ENOENT)
        target = await self.resolver.entry(new_ref, new)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise fail(errno.EEXIST)
            if isinstance(target, DirNode):
                if not isinstance(entry, DirNode):
                    raise fail(errno.EISDIR)
                if await self.resolver.merged(new_ref, new):
                    raise fail(errno.ENOTEMPTY)
            elif isinstance(entry, DirNode):
                raise fail(errno.ENOTDIR)
        await self.writer.move(entry, old_ref, old_ws, old, new_ws, new)
        if isinstance(entry, DirNode):
            old_ws.subdirs_changed(old_parent.path, -1)
            if target is None:  # (a directory replaced by it leaves the count as it was)
                new_ws.subdirs_changed(new_parent.path, 1)
        old_ws.entries_changed(old_parent.path)
        new_ws.entries_changed(new_parent.path)
        if _link_of(target):  # a hard link's name replaced: its other names count one less
            self.inodes.unnamed(new_parent.repo, new_parent.ref, new)
        if _link_of(target) or _link_of(entry):
            # The daemon recounts a hard link's names and dates the change (the file's ctime):
            # sent now, what the mount shows of it is the daemon's from the start.
            try:
                await new_ws.flush()
            except PfsError:
                pass  # the committer sends it when it can
        self.inodes.renamed((old_parent.repo, old_parent.ref, old), (new_parent.repo, new_parent.ref, new))


# Entries offered to the kernel at once in a plain listing: about what a request's buffer takes
# (32 KiB, a getdents's, at 24 bytes an entry and more for longer names).
PLAIN_BATCH = 1024
_PRIVS = stat.S_ISUID | stat.S_ISGID
_REPLY_NAMES = getattr(pyfuse3, "readdir_reply_names", None)  # (pfsfuse's patch of pyfuse3)


def _link_of(entry) -> int | None:
    """The hard link id of a file, symlink or special file (or a file being written) with one."""
    st = entry.stat if isinstance(entry, (FileNode, LocalFile, SymlinkNode, SpecialNode)) else None
    return None if st is None else st.link


def _user_xattr(name: bytes) -> str:
    """An extended attribute's name, if it is one the mount keeps or shows: user ones only."""
    if not name.startswith(b"user."):
        # No ACLs or security labels here. ENOTSUP (not ENODATA) lets `ls -l` and `cp -a`
        # remember that per device instead of asking about every file.
        raise fail(errno.ENOTSUP)
    if name == b"user.":
        raise fail(errno.EINVAL)  # as a disk says: a namespace with no name in it
    try:
        return name.decode()
    except UnicodeDecodeError:
        raise fail(errno.EINVAL) from None  # names are kept as text, as paths are


def _new_stat(mode: int, ctx) -> Stat:
    """The stat of an entry made now by the caller of `ctx` (the kernel applied the umask)."""
    now = time.time_ns()
    return Stat(mode & 0o7777, ctx.uid, ctx.gid, now, now)
