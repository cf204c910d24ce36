"""The mount's inodes: numbers from hashes of paths, counted lookups, moved on rename."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pyfuse3
import xxhash

from pfsfuse.metadata import names
from pfsfuse.mount.boundary import fail


@dataclass
class Inode:
    ino: int
    kind: str  # "root", "repo", or "entry" (a path under a ref; "" is the ref's directory)
    repo: str = ""
    ref: str = ""
    path: str = ""
    lookups: int = 0
    link: str = ""  # shown to the kernel as a symlink to this, stored as a reference to its data


class InodeTable:
    """The inodes the kernel knows, by number and by (kind, repo, ref, path)."""

    def __init__(self):
        self._inodes: dict[int, Inode] = {}
        self._by_key: dict[tuple, int] = {}
        self.add(Inode(pyfuse3.ROOT_INODE, "root", lookups=1))

    def of(self, kind: str, repo: str = "", ref: str = "", path: str = "") -> Inode:
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

    def get(self, ino: int) -> Inode:
        """The inode the kernel names: ESTALE once it is forgotten."""
        inode = self._inodes.get(ino)
        if inode is None:
            raise fail(errno.ESTALE)
        return inode

    def find(self, ino: int) -> Inode | None:
        return self._inodes.get(ino)

    def __contains__(self, ino: int) -> bool:
        return ino in self._inodes

    def add(self, inode: Inode) -> None:
        """An inode numbered elsewhere (or again), under its path."""
        self._inodes[inode.ino] = inode
        self._by_key[(inode.kind, inode.repo, inode.ref, inode.path)] = inode.ino

    def drop(self, ino: int) -> None:
        """Forget an inode whatever the kernel's count: later forgets for it are ignored."""
        inode = self._inodes.pop(ino, None)
        if inode is not None:
            key = (inode.kind, inode.repo, inode.ref, inode.path)
            if self._by_key.get(key) == ino:
                del self._by_key[key]

    def forget(self, inode_list) -> None:
        for ino, n in inode_list:
            inode = self._inodes.get(ino)
            if inode is None or inode.kind == "root":
                continue
            inode.lookups -= n
            if inode.lookups <= 0:
                del self._inodes[ino]
                self._by_key.pop((inode.kind, inode.repo, inode.ref, inode.path), None)

    def invalidate(self, repo: str, ref: str, paths: list[str]) -> None:
        """Make the kernel look these names up again (what it cached is no longer so)."""
        for path in paths:
            parent, name = names.split(path)
            ino = self._by_key.get(("entry", repo, ref, parent))
            if ino is not None:
                pyfuse3.invalidate_entry_async(ino, name.encode(), ignore_enoent=True)

    def renamed(self, old: tuple[str, str, str], new: tuple[str, str, str]) -> None:
        """Inodes keep their numbers across a rename: move them (and what is under them) to the
        new paths, as the kernel did with its dentries."""
        repo, ref, path = old
        moved = [
            i
            for i in self._inodes.values()
            if i.kind == "entry"
            and (i.repo, i.ref) == (repo, ref)
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
