"""Metadata the kernel sees: attributes (mode, size, times, how long to cache them), the changes
setattr may make (size, the executable bit), extended attributes (user.pfs.*) and statfs."""

from __future__ import annotations

import errno
import os
import stat
import time

import msgspec
import pyfuse3

from pfsfuse.api.types import Chmod
from pfsfuse.metadata import names
from pfsfuse.metadata.records import DirNode, FileNode, SymlinkNode
from pfsfuse.mount.boundary import BLOCK, fail
from pfsfuse.mount.inodes import Inode
from pfsfuse.mount.reading import Reader
from pfsfuse.mount.resolve import LISTING_TTL, Ref, Resolver
from pfsfuse.mount.trees import Trees
from pfsfuse.mount.workspace import LocalFile, Workspace
from pfsfuse.mount.writing import Writer


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

    async def change(self, ws: Workspace, path: str, entry, attr, fields):
        """Apply setattr to the entry at `path` of a branch; returns the entry as it is now.
        Times, owners and the other mode bits are not versioned: accepted and not kept."""
        if fields.update_size:
            if isinstance(entry, DirNode):
                raise fail(errno.EISDIR)
            open_file = isinstance(entry, LocalFile) and entry.writers
            f = entry if isinstance(entry, LocalFile) else await self._writer.writable(ws, path, entry, False)
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
                ws.put_node(path, entry, Chmod(path, executable))
        return entry

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
