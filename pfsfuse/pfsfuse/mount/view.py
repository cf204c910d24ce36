"""A pipeline worker's /pfs: one FUSE file system showing a datum's inputs, read-only, and
/pfs/out, writable.

    /pfs/<input>/<path>   the datum's files of each input: what its glob matched, under the
                          directories that lead to it (nothing else of the commit shows)
    /pfs/out/...          a directory of the worker's on disk, passed through

One file system, so that a hard link from /pfs/out to an input reaches us (the kernel refuses
links between mounts) and becomes a reference to the input's data, as in the store mount: the
link is an empty placeholder on disk that reads as the input, and nothing is copied. `lazy`
inputs show as named pipes, which a feeder streams; each one is also reachable as
/pfs/.pfs-pipes/<n>, a name nobody lists, so that the feeder's own opens do not look like a
reader's. `empty_files` inputs show as empty files.

The worker runs the view in a thread of its own (`Served`) and calls `show` before each datum and
`done` after it. Each datum's directories are new inodes, and the kernel is told to forget the
names in /pfs of the last one: nothing of one datum shows in the next.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import stat
import threading
from dataclasses import dataclass

import pyfuse3
import trio

from pfsfuse.api.client import Client
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import Unavailable
from pfsfuse.metadata.records import EMPTY_DIR, FileNode
from pfsfuse.mount.boundary import BLOCK, component, fail, translate
from pfsfuse.mount.fs import Filesystem
from pfsfuse.mount.inodes import Inode
from pfsfuse.mount.reading import Handle
from pfsfuse.mount.resolve import DirHandle

OUT = 1 << 63  # the inode numbers of /pfs/out's files: ours are hashes below 2**63
OUT_TTL = 60.0  # /pfs/out changes only through us
PIPES = ".pfs-pipes"
COMMIT_KINDS = ("entry", "lazy", "empty")  # inodes of a commit's files: shown as such, as pipes, empty
_EMPTY = FileNode(0, b"")
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Shown:
    """An input of the datum: `path` of `repo`@`commit` shown at /pfs/`name`/`path`."""

    name: str
    repo: str
    commit: str
    path: str
    how: str = "entry"  # or "lazy", "empty"


@dataclass
class OutHandle:
    fd: int
    wrote: bool = False  # /pfs/out is a directory on disk: the daemon refuses none of its writes


class DatumView(Filesystem):
    # A datum's inputs show other kinds of entries (lazy pipes, empty files) than their nodes
    # say: every listing carries attributes.
    enable_readdirplus_auto = False
    # /pfs/out's writes go to a directory on disk as the worker's user, which keeps setuid where
    # the pipeline's user would lose it: the kernel drops it, as before.
    enable_killpriv_v2 = False

    def __init__(self, client: Client, mountpoint: str, out: str, tmpdir: str):
        super().__init__(client, mountpoint, tmpdir, read_only=True)
        self.out = out  # the directory on disk shown at /pfs/out
        self.inputs: dict[str, Shown] = {}
        self.pipes: list[tuple[str, str, str]] = []  # (repo, commit, path) of /pfs/.pfs-pipes/<n>
        self.serial = 0  # of the datum shown: keys its directories' inodes
        self._out_root: Inode | None = None
        self._out_fds: dict[int, int] = {}  # inode -> an O_PATH descriptor of its file on disk
        self._out_inos: dict[int, int] = {}  # the file's inode number on disk -> ours
        self._out_next = itertools.count(1)
        self._linked: dict[int, tuple[Inode, FileNode]] = {}  # disk inode number -> the input file

    # -- the worker's calls, made in the loop's thread

    async def show(self, inputs: list[Shown], pipes: list[tuple[str, str, str]]) -> None:
        """Show a datum's inputs and an empty /pfs/out (its directory on disk must be empty)."""
        for name in [*self.inputs, "out", PIPES] if self.serial else []:
            # The kernel forgets the last datum's names (and all under them). Not from the loop's
            # thread, which must stay free to answer the requests this may wait for.
            await trio.to_thread.run_sync(_invalidate, name)
        self.serial += 1
        self.inputs = {i.name: i for i in inputs}
        self.pipes = pipes
        self._out_root = self._adopt(os.open(self.out, _PATH_FLAGS | os.O_DIRECTORY))

    def done(self) -> dict[tuple[int, int], tuple[str, str, str]]:
        """Stop showing /pfs/out; returns the inputs its hard links stand for, by (device, inode)
        of the placeholder on disk."""
        dev = os.stat(self.out).st_dev
        linked = {(dev, n): (i.repo, i.ref, i.path) for n, (i, _) in self._linked.items()}
        for ino, fd in self._out_fds.items():
            os.close(fd)
            self.inodes.drop(ino)  # the kernel's forgets for it are ignored from now on
        self._out_fds.clear()
        self._out_inos.clear()
        self._linked.clear()
        self._out_root = None
        return linked

    # -- the datum's inputs

    async def child(self, parent: Inode, name: str):
        if name == ".":
            return parent, *(await self.describe(parent))
        if parent.kind == "root":
            if name == "out" and self._out_root is not None:
                return self._out_root, None, None
            if name == PIPES:
                return self.inodes.of("pipes"), EMPTY_DIR, None
            shown = self.inputs.get(name)
            if shown is None:
                raise fail(errno.ENOENT)
            return await self._shown(shown, "")
        if parent.kind == "out":
            return self._out_lookup(parent, name), None, None
        if parent.kind == "pipes":
            try:
                key = self.pipes[int(name)]
            except (ValueError, IndexError):
                raise fail(errno.ENOENT) from None
            r = await self.resolver.ref(key[0], key[1])
            return self.inodes.of("lazy", *key), await self.resolver.entry(r, key[2]), r
        if parent.kind == "chain":
            shown = self.inputs.get(parent.repo)
            if shown is None or parent.ref != str(self.serial):
                raise fail(errno.ENOENT)  # a directory of an earlier datum
            return await self._shown(shown, names.join(parent.path, name))
        r = await self.resolver.ref(parent.repo, parent.ref)
        path = names.join(parent.path, name)
        entry = await self.resolver.entry(r, path)
        if entry is None:
            raise fail(errno.ENOENT)
        return self.inodes.of(parent.kind, parent.repo, parent.ref, path), entry, r

    @translate
    async def lookup(self, parent_ino, name, ctx=None):
        try:
            return await super().lookup(parent_ino, name, ctx)
        except pyfuse3.FUSEError as e:
            if e.errno != errno.ENOENT or self.inodes.get(parent_ino).kind in ("root", "pipes"):
                raise
        # Nothing changes /pfs/out but us and a datum's inputs never change: the kernel may
        # remember that the name is not there (a command creating a file looks it up twice).
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.entry_timeout = 0, OUT_TTL
        return a

    async def _shown(self, shown: Shown, path: str):
        """What /pfs/<input>/`path` is: the datum's data, a directory leading to it, or nothing."""
        if not shown.path or path == shown.path or path.startswith(shown.path + "/"):
            r = await self.resolver.ref(shown.repo, shown.commit)
            entry = await self.resolver.entry(r, path)
            if entry is None:
                raise fail(errno.ENOENT)
            return self.inodes.of(shown.how, shown.repo, shown.commit, path), entry, r
        if not path or shown.path.startswith(path + "/"):
            return self.inodes.of("chain", shown.name, str(self.serial), path), EMPTY_DIR, None
        raise fail(errno.ENOENT)

    async def describe(self, inode: Inode):
        if inode.kind in COMMIT_KINDS:
            return await super().describe(dataclasses.replace(inode, kind="entry"))
        if inode.kind in ("root", "out"):
            return None, None
        return EMPTY_DIR, None  # a directory leading to a datum's data, or the pipes' directory

    def attributes(self, inode: Inode, entry, r, a: pyfuse3.EntryAttributes | None = None) -> pyfuse3.EntryAttributes:
        if inode.kind == "out":
            a = self._out_attr(inode)
        else:
            a = super().attributes(inode, entry, r, a)
            if inode.kind in ("lazy", "empty") and isinstance(entry, FileNode):
                a.st_mode = (stat.S_IFIFO if inode.kind == "lazy" else stat.S_IFREG) | 0o444
                a.st_size = a.st_blocks = 0
        return a

    async def xattrs(self, inode: Inode) -> dict[str, bytes]:
        if inode.kind in COMMIT_KINDS:
            return await super().xattrs(dataclasses.replace(inode, kind="entry"))
        return {}

    @translate
    async def opendir(self, ino, ctx=None):
        inode = self.inodes.get(ino)
        if inode.kind == "root":
            listing = [*sorted(self.inputs), "out"]
        elif inode.kind == "chain":
            if inode.ref != str(self.serial):
                raise fail(errno.ENOENT)  # of an earlier datum
            rest = self.inputs[inode.repo].path[len(inode.path) + 1 if inode.path else 0 :]
            listing = [rest.partition("/")[0]]
        elif inode.kind == "pipes":
            listing = []
        elif inode.kind == "out":
            with os.scandir(self._out_proc(inode)) as entries:
                listing = sorted(e.name for e in entries)
        else:
            return await super().opendir(ino, ctx)
        return self.handles.add(DirHandle(inode, [(n, None) for n in listing], EMPTY_DIR))

    @translate
    async def open(self, ino, flags, ctx=None):
        inode = self.inodes.get(ino)
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if inode.kind == "out":
            linked = self._linked.get(os.fstat(self._out_fds[ino]).st_ino)
            if linked is not None:  # a hard link to an input: read-only, as the input
                if writing:
                    raise fail(errno.EROFS)
                source, node = linked
                return await self.open_node(source, node, await self.resolver.ref(source.repo, source.ref))
            flags &= ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_APPEND)  # appends come with offsets
            fh = self.handles.add(OutHandle(os.open(self._out_proc(inode), flags | os.O_CLOEXEC)))
            return pyfuse3.FileInfo(fh=fh)
        if writing:
            raise fail(errno.EROFS)
        if inode.kind == "empty":
            fh = self.handles.add(Handle(inode, None, node=_EMPTY))
            return pyfuse3.FileInfo(fh=fh, keep_cache=True)
        return await super().open(ino, flags, ctx)

    @translate
    async def read(self, fh, off, size):
        h = self.handles[fh]
        if isinstance(h, OutHandle):
            return os.pread(h.fd, size, off)
        return await super().read(fh, off, size)

    @translate
    async def write(self, fh, off, buf):
        h = self.handles[fh]
        if not isinstance(h, OutHandle):
            raise fail(errno.EBADF)
        return os.pwrite(h.fd, buf, off)

    @translate
    async def release(self, fh):
        h = self.handles[fh]
        if isinstance(h, OutHandle):
            del self.handles[fh]
            os.close(h.fd)
            return
        await super().release(fh)

    @translate
    async def flush(self, fh):
        pass  # nothing of ours is refused at close: /pfs/out is saved once the command ends

    @translate
    async def fsync(self, fh, datasync):
        pass  # /pfs/out is saved once the command ends: there is nothing to make durable before

    async def forget(self, inode_list):
        outs = [self.inodes.find(ino) for ino, _ in inode_list if ino & OUT]
        await super().forget(inode_list)
        for inode in outs:
            if inode is None or inode.ino in self.inodes:
                continue
            if inode is self._out_root:
                self.inodes.add(inode)  # /pfs/out itself stays until the datum is done
            else:
                del self._out_inos[int(inode.ref)]
                os.close(self._out_fds.pop(inode.ino))

    # -- /pfs/out: passed through to its directory on disk

    def _adopt(self, fd: int) -> Inode:
        """Our inode for the file an O_PATH descriptor refers to (which is ours to close)."""
        number = os.fstat(fd).st_ino
        ino = self._out_inos.get(number)
        if ino is not None:
            os.close(fd)
            return self.inodes.get(ino)
        ino = OUT | next(self._out_next)
        self._out_inos[number] = ino
        self._out_fds[ino] = fd
        inode = Inode(ino, "out", ref=str(number))
        self.inodes.add(inode)
        return inode

    def _out_lookup(self, parent: Inode, name: str) -> Inode:
        if name == "..":
            raise fail(errno.ENOENT)
        return self._adopt(os.open(name, _PATH_FLAGS, dir_fd=self._out_fds[parent.ino]))

    def _out_proc(self, inode: Inode) -> str:
        return f"/proc/self/fd/{self._out_fds[inode.ino]}"

    def _out_attr(self, inode: Inode) -> pyfuse3.EntryAttributes:
        st = os.fstat(self._out_fds[inode.ino])
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode.ino
        a.generation = 0
        a.entry_timeout = a.attr_timeout = OUT_TTL
        a.st_mode, a.st_nlink, a.st_uid, a.st_gid = st.st_mode, st.st_nlink, st.st_uid, st.st_gid
        a.st_size, a.st_blocks, a.st_blksize = st.st_size, st.st_blocks, BLOCK
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        linked = self._linked.get(st.st_ino)
        if linked is not None:
            node = linked[1]
            a.st_mode = stat.S_IFREG | 0o444 | (0o111 if node.executable else 0)
            a.st_size, a.st_blocks = node.size, (node.size + 511) // 512
        return a

    def _out_parent(self, parent_ino: int) -> int | None:
        """The descriptor of a directory of /pfs/out, None for any other directory."""
        return self._out_fds.get(parent_ino) if parent_ino & OUT else None

    def _made(self, dir_fd: int, name: str, ctx) -> pyfuse3.EntryAttributes:
        """The attributes of a file just made in /pfs/out, owned by whoever made it."""
        if ctx.uid != os.geteuid():
            os.chown(name, ctx.uid, ctx.gid, dir_fd=dir_fd, follow_symlinks=False)
        inode = self._adopt(os.open(name, _PATH_FLAGS, dir_fd=dir_fd))
        inode.lookups += 1
        return self._out_attr(inode)

    @translate
    async def create(self, parent_ino, name, mode, flags, ctx=None):
        dir_fd = self._out_parent(parent_ino)
        if dir_fd is None:
            return await super().create(parent_ino, name, mode, flags, ctx)
        text = component(name)
        flags &= ~(os.O_NOCTTY | os.O_APPEND)
        fd = os.open(text, flags | os.O_CREAT | os.O_CLOEXEC, mode & 0o7777, dir_fd=dir_fd)
        fh = self.handles.add(OutHandle(fd))
        return pyfuse3.FileInfo(fh=fh), self._made(dir_fd, text, ctx)

    @translate
    async def mkdir(self, parent_ino, name, mode, ctx):
        dir_fd = self._out_parent(parent_ino)
        if dir_fd is None:
            return await super().mkdir(parent_ino, name, mode, ctx)
        text = component(name)
        os.mkdir(text, mode & 0o7777, dir_fd=dir_fd)
        return self._made(dir_fd, text, ctx)

    @translate
    async def symlink(self, parent_ino, name, target, ctx):
        dir_fd = self._out_parent(parent_ino)
        if dir_fd is None:
            return await super().symlink(parent_ino, name, target, ctx)
        text = component(name)
        os.symlink(target, text, dir_fd=dir_fd)
        return self._made(dir_fd, text, ctx)

    @translate
    async def link(self, ino, new_parent_ino, new_name, ctx):
        dir_fd = self._out_parent(new_parent_ino)
        if dir_fd is None:
            return await super().link(ino, new_parent_ino, new_name, ctx)
        inode, text = self.inodes.get(ino), component(new_name)
        if inode.kind == "out":
            os.link(self._out_proc(inode), text, dst_dir_fd=dir_fd, follow_symlinks=True)
            return self._made(dir_fd, text, ctx)
        entry, _ = await self.describe(inode)
        if inode.kind not in COMMIT_KINDS or not isinstance(entry, FileNode):
            raise fail(errno.EPERM)
        # A file of an input: an empty placeholder that reads as the input and is saved as a
        # reference to it.
        os.close(os.open(text, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o444, dir_fd=dir_fd))
        source = self.inodes.of("entry", inode.repo, inode.ref, inode.path)
        self._linked[os.stat(text, dir_fd=dir_fd).st_ino] = (source, entry)
        return self._made(dir_fd, text, ctx)

    @translate
    async def unlink(self, parent_ino, name, ctx):
        dir_fd = self._out_parent(parent_ino)
        if dir_fd is None:
            return await super().unlink(parent_ino, name, ctx)
        os.unlink(component(name), dir_fd=dir_fd)

    @translate
    async def rmdir(self, parent_ino, name, ctx):
        dir_fd = self._out_parent(parent_ino)
        if dir_fd is None:
            return await super().rmdir(parent_ino, name, ctx)
        os.rmdir(component(name), dir_fd=dir_fd)

    @translate
    async def rename(self, old_parent_ino, old_name, new_parent_ino, new_name, flags, ctx):
        old_fd, new_fd = self._out_parent(old_parent_ino), self._out_parent(new_parent_ino)
        if old_fd is None or new_fd is None:
            raise fail(errno.EROFS)  # into or out of an input
        old, new = component(old_name), component(new_name)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        if flags & pyfuse3.RENAME_NOREPLACE and _exists(new, new_fd):
            raise fail(errno.EEXIST)
        os.rename(old, new, src_dir_fd=old_fd, dst_dir_fd=new_fd)

    @translate
    async def readlink(self, ino, ctx=None):
        inode = self.inodes.get(ino)
        if inode.kind == "out":
            return os.readlink("", dir_fd=self._out_fds[ino]).encode()
        return await super().readlink(ino, ctx)

    @translate
    async def setattr(self, ino, attr, fields, fh, ctx):
        inode = self.inodes.get(ino)
        if inode.kind != "out":
            raise fail(errno.EROFS)
        fd = self._out_fds[ino]
        st = os.fstat(fd)
        if st.st_ino in self._linked:
            raise fail(errno.EROFS)  # a hard link to an input
        proc = self._out_proc(inode)
        if fields.update_size:
            h = self.handles.get(fh)
            if isinstance(h, OutHandle):
                os.ftruncate(h.fd, attr.st_size)
            else:
                os.truncate(proc, attr.st_size)
        if not stat.S_ISLNK(st.st_mode):  # a symlink's mode and times are not kept
            if fields.update_mode:
                os.chmod(proc, stat.S_IMODE(attr.st_mode))
            if fields.update_atime or fields.update_mtime:
                atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                os.utime(proc, ns=(atime, mtime))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            os.chown(proc, uid, gid)
        return self._out_attr(inode)


def _invalidate(name: str) -> None:
    try:
        pyfuse3.invalidate_entry(pyfuse3.ROOT_INODE, name.encode())
    except FileNotFoundError:
        pass  # not looked up


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


class Served:
    """A view mounted at its mountpoint and served by a thread of its own."""

    def __init__(self, view: DatumView, timeout: float = 30.0, fuse_fd: int | None = None):
        """`fuse_fd`: /dev/fuse already mounted (by another process, at the view's mountpoint in
        its mount namespace): served as it is (libfuse's /dev/fd/N), and owned from then on."""
        self.view = view
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._fd = fuse_fd
        options = set(pyfuse3.default_options) | {"fsname=pfsfuse", "subtype=pfs", "allow_other"}
        pyfuse3.init(view, view.mountpoint if fuse_fd is None else f"/dev/fd/{fuse_fd}", options)
        self._thread = threading.Thread(target=self._run, name="pfs-view", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise Unavailable(f"cannot serve {view.mountpoint}: {self._error or 'timed out'}")

    def call(self, fn, *args):
        """`fn(*args)` in the view's thread, between requests."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def wait(self, fn, *args):
        """`await fn(*args)` in the view's thread."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._thread.is_alive():
            self.call(pyfuse3.terminate)
            self._thread.join()

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as e:  # noqa: BLE001 - told to the caller waiting for readiness
            self._error = e
        finally:
            pyfuse3.close(unmount=True)
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.view.nursery = nursery
            nursery.start_soon(self._main, nursery)
            if self._fd is None:  # (a mount elsewhere is served once the session is)
                await trio.to_thread.run_sync(os.stat, self.view.mountpoint)  # served once this is
            self._ready.set()

    @staticmethod
    async def _main(nursery: trio.Nursery) -> None:
        await pyfuse3.main()
        nursery.cancel_scope.cancel()  # read-ahead still going: not needed any more
