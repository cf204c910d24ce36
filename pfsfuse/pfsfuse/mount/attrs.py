"""Metadata the kernel sees: attributes (mode, owner, size, times, how long to cache them), the
changes setattr may make (size, mode, owner, times: kept in the commit as the entry's stat),
extended attributes (user ones, kept in the stat too, and the mount's own user.pfs.*) and statfs."""

from __future__ import annotations

import errno
import os
import stat
import time

import msgspec
import pyfuse3

from pfsfuse.api.types import SetStat
from pfsfuse.metadata import names
from pfsfuse.metadata.records import DirNode, FileNode, SpecialNode, Stat, node_type
from pfsfuse.mount.boundary import BLOCK, fail
from pfsfuse.mount.inodes import Inode
from pfsfuse.mount.localfile import LocalFile
from pfsfuse.mount.reading import Reader
from pfsfuse.mount.resolve import LISTING_TTL, Ref, Resolver
from pfsfuse.mount.trees import Trees
from pfsfuse.mount.workspace import Workspace, stat_of
from pfsfuse.mount.writing import Writer

# A directory's st_blksize, which sizes libc's readdir buffer: each getdents of a listing the
# kernel serves from its cache (listings.py) hands over this much at once, and a reader that
# stats what it lists looks each of those names up before the mount can drop that cache.
DIR_BLOCK = 1 << 15


def without_privs(st: Stat) -> Stat:
    """`st` without setuid and setgid, as a disk drops them on a write or truncate by a caller
    without CAP_FSETID and on any chown of a non-directory. Setgid without group execute stays:
    it marks mandatory locking, not a privilege."""
    mode = st.mode & ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return st if mode == st.mode else msgspec.structs.replace(st, mode=mode, ctime=time.time_ns())


def file_type(entry) -> int:
    """The S_IF* type of an entry: None is a directory of its own (the root, a repo), and a file
    being written is a regular file."""
    if entry is None:
        return stat.S_IFDIR
    return stat.S_IFREG if isinstance(entry, LocalFile) else node_type(entry)


class Attrs:
    def __init__(self, resolver: Resolver, reader: Reader, writer: Writer, trees: Trees, io):
        self._resolver = resolver
        self._reader = reader
        self._writer = writer
        self._trees = trees
        self._io = io
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started = time.time()

    def of(
        self, inode: Inode, entry, r: Ref | None, a: pyfuse3.EntryAttributes | None = None
    ) -> pyfuse3.EntryAttributes:
        """The attributes of an entry. `a`, filled by an earlier call for an entry of the same
        ref, is filled again: a listing sends each one before it asks for the next."""
        if r is None:  # the root and repo directories: mkdir makes repos and branches there
            ttl, mtime, writable = LISTING_TTL, self.started, self._resolver.growable
        else:
            ttl, mtime, writable = r.ttl, r.mtime, r.workspace is not None
        if a is None:
            a = pyfuse3.EntryAttributes()
            a.generation = 0
            a.entry_timeout = a.attr_timeout = ttl
        a.st_ino = inode.ino
        st = getattr(entry, "stat", None)
        if isinstance(entry, DirNode):
            a.st_nlink = entry.nlink
            if r is not None and r.workspace is not None:
                a.st_nlink = r.workspace.nlink(inode.path, a.st_nlink)
                st = r.workspace.dir_stat(inode.path, st)
        else:  # a hard link counts its names; 1 for the root and repo directories ("not counted")
            a.st_nlink = 1 if st is None or st.nlink is None else st.nlink
        kind = file_type(entry)
        a.st_blksize = BLOCK
        if kind == stat.S_IFDIR:
            perm = 0o755 if writable else 0o555
            a.st_size = 4096
            a.st_blksize = DIR_BLOCK
        elif kind == stat.S_IFLNK:
            perm = 0o777
            a.st_size = entry.size
        elif kind == stat.S_IFREG:
            perm = (0o644 if writable else 0o444) | (0o111 if entry.executable else 0)
            a.st_size = entry.size
        else:
            perm = 0o644
            a.st_size = 0
        a.st_blocks = (a.st_size + 511) // 512
        a.st_rdev = entry.rdev if isinstance(entry, SpecialNode) else 0
        if st is None:  # stored without one: the mounting user's, dated by the commit
            a.st_mode = kind | perm
            a.st_uid, a.st_gid = self.uid, self.gid
            a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = int(mtime * 1e9)
        else:
            a.st_mode = kind | st.mode
            a.st_uid, a.st_gid = st.uid, st.gid
            a.st_mtime_ns = st.mtime
            a.st_atime_ns = st.mtime if st.atime is None else st.atime
            a.st_ctime_ns = st.ctime
        return a

    async def change(self, ws: Workspace, path: str, entry, r: Ref, attr, fields, ctx):
        """Apply setattr to the entry at `path` of a branch; returns the entry as it is now.
        Mode, owner and times are kept in the entry's stat (atime only as utimensat sets it:
        reads do not move it, as on a disk mounted noatime)."""
        if fields.update_size:
            if isinstance(entry, DirNode):
                raise fail(errno.EISDIR)
            open_file = isinstance(entry, LocalFile) and entry.writers
            if isinstance(entry, LocalFile):
                f = entry
            else:
                f = await self._writer.writable(ws, path, entry, False, r.commit.id if r.commit is not None else None)
            f.truncate(attr.st_size)
            if not isinstance(entry, LocalFile):
                ws.closed(f, wrote=True)  # the copy on write is not open: log it now
            elif not open_file:
                ws.changed_file(f)
            entry = f
        old = self.current_stat(path, entry, r)
        new = self.changed_stat(old, attr, fields, ctx)
        # The kernel leaves dropping setuid and setgid to us (Filesystem.enable_killpriv_v2),
        # unless it sends the mode itself.
        chown = (fields.update_uid or fields.update_gid) and not isinstance(entry, DirNode)
        if (chown or (fields.update_size and ctx.uid != 0)) and not fields.update_mode:
            new = without_privs(new)
        return entry if new == old else self._restat(ws, path, entry, new)

    def drop_privs(self, ws: Workspace, f: LocalFile) -> bool:
        """A write, or an open that truncates, by a caller without CAP_FSETID: the file loses
        setuid and setgid. Returns whether it had them."""
        new = without_privs(f.stat)
        if new is f.stat:
            return False
        self._restat(ws, f.path, f, new)
        return True

    @staticmethod
    def current_stat(path: str, entry, r: Ref) -> Stat:
        """The stat the entry at `path` of `r` shows: its own (or the mount's default), with a
        directory's changes made here and not sent yet."""
        st = stat_of(entry, r.mtime)
        if isinstance(entry, DirNode) and r.workspace is not None:
            st = r.workspace.dir_stat(path, st) or st
        return st

    def set_xattr(self, ws: Workspace, path: str, entry, r: Ref, name: str, value: bytes | None):
        """Set (or with None remove) a user extended attribute of the file or directory at
        `path` of a branch: kept in its stat, which it dates (ctime)."""
        if not path:
            raise fail(errno.ENOTSUP)  # a branch's top has no stat of its own to keep it in
        if not isinstance(entry, (DirNode, FileNode, LocalFile)):
            raise fail(errno.EPERM)  # as a disk says for a symlink's or a device's user.*
        old = self.current_stat(path, entry, r)
        kept = dict(old.xattrs or ())
        if value is None and kept.pop(name, None) is None:
            raise fail(pyfuse3.ENOATTR)
        if value is not None:
            kept[name] = value
        pairs = tuple(sorted(kept.items()))
        if sum(names.byte_length(n) + len(v) for n, v in pairs) > names.XATTRS_MAX:
            raise fail(errno.ENOSPC)  # as ext4 says when an inode's attributes fill their block
        new = msgspec.structs.replace(old, xattrs=pairs or None, ctime=time.time_ns())
        self._restat(ws, path, entry, new)

    def _restat(self, ws: Workspace, path: str, entry, new: Stat):
        """Give the entry at `path` of a branch the stat `new`; returns the entry as it is now."""
        if isinstance(entry, DirNode):
            ws.restat_dir(path, new, SetStat(path, new))
            entry = msgspec.structs.replace(entry, stat=new)
        elif isinstance(entry, LocalFile):
            entry.stat = new
            if not entry.writers:
                ws.changed_file(entry)
        else:
            changes: dict = {"stat": new}
            if isinstance(entry, FileNode):
                changes["executable"] = bool(new.mode & 0o111)
            entry = msgspec.structs.replace(entry, **changes)
            ws.put_node(path, entry, SetStat(path, new))
        return entry

    def changed_stat(self, old: Stat, attr, fields, ctx) -> Stat:
        """`old` with setattr's changes, checked as a disk checks them: only the owner (or root)
        changes the mode or times, only root gives a file away, and the owner gives it only to
        a group of their own."""
        mode, uid, gid, mtime, atime = old.mode, old.uid, old.gid, old.mtime, old.atime
        if fields.update_atime:
            atime = attr.st_atime_ns
        if fields.update_mode:
            mode = attr.st_mode & 0o7777
        if fields.update_uid:
            uid = attr.st_uid
        if fields.update_gid:
            gid = attr.st_gid
        if fields.update_mtime:
            mtime = attr.st_mtime_ns
        root, owner = ctx.uid == 0, ctx.uid == old.uid
        # Other users reach the mount only with allow_other, which comes with default_permissions:
        # the kernel has checked their call already, and knows better (their supplementary groups;
        # setuid bits it clears itself when a non-owner writes).
        checked_by_kernel = ctx.uid != self.uid
        if not checked_by_kernel and (
            (uid != old.uid and not root)
            or (gid != old.gid and not root and not (owner and gid in self._groups(ctx)))
            or ((mode != old.mode or fields.update_mtime or fields.update_atime) and not (root or owner))
        ):
            raise fail(errno.EPERM)
        new = (mode, uid, gid, mtime, atime)
        if new == (old.mode, old.uid, old.gid, old.mtime, old.atime) and not fields.update_ctime:
            return old
        ctime = attr.st_ctime_ns if fields.update_ctime else time.time_ns()
        return msgspec.structs.replace(old, mode=mode, uid=uid, gid=gid, mtime=mtime, atime=atime, ctime=ctime)

    def _groups(self, ctx) -> set[int]:
        """The groups of the caller (the mounting user: see `changed_stat`)."""
        return {ctx.gid, *os.getgroups()}

    async def extended(self, inode: Inode, entry, r: Ref | None) -> dict[str, bytes]:
        """The extended attributes of an inode, whose entry and ref (`describe`) are given."""
        if inode.kind == "root":
            return {"user.pfs.fetched": str(self._reader.fetched).encode()}
        if inode.kind != "entry":
            return {"user.pfs.repo": inode.repo.encode()}
        out = {
            "user.pfs.repo": inode.repo.encode(),
            "user.pfs.ref": inode.ref.encode(),
            "user.pfs.path": ("/" + inode.path).encode(),
        }
        if r is not None and r.commit is not None:
            out["user.pfs.commit"] = r.commit.id.encode()
            out["user.pfs.finished"] = b"yes" if r.commit.finished else b"no"
        if isinstance(entry, FileNode):
            out["user.pfs.hash"] = entry.hash.hex().encode()
            out["user.pfs.chunks"] = str(len(await self._io(self._trees.chunks, entry))).encode()
        elif isinstance(entry, DirNode) and entry.root is not None:
            out["user.pfs.hash"] = entry.root.hex().encode()
        elif isinstance(entry, LocalFile):
            out["user.pfs.pending"] = b"yes"  # written here, not yet in a commit
        return out

    @staticmethod
    def statfs() -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLOCK
        s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 40  # the object store is the limit, not us
        s.f_files = s.f_ffree = s.f_favail = 1 << 40
        s.f_namemax = names.MAX_COMPONENT
        return s
