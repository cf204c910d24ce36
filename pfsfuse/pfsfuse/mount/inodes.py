"""The mount's inodes: numbers from hashes of paths, counted lookups, moved on rename. The names
of a hard link share one inode, found by its link id."""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import xxhash

from pfsfuse.metadata import names
from pfsfuse.mount.boundary import fail

log = logging.getLogger("pfsfuse.mount")

# Entry inodes the kernel may hold before the mount asks it to drop the oldest: each costs the
# mount about 400 bytes, and a listing of a million entries would otherwise keep them all, since
# the kernel forgets an inode only when its dentry goes (FUSE inodes are not cached without one).
KEPT = 1 << 17
PRUNE_BATCH = 4096  # inodes a prune notification names


@dataclass(slots=True)
class Inode:
    ino: int
    kind: str  # "root", "repo", or "entry" (a path under a ref; "" is the ref's directory)
    repo: str = ""
    ref: str = ""
    path: str = ""
    lookups: int = 0
    link: str = ""  # shown to the kernel as a symlink to this, stored as a reference to its data
    # A hard link's id; `path` is the name its reads and writes go through, `names` all it has
    # been looked up by (the kernel knows it by those).
    linkid: int = 0
    names: set[str] | None = None
    # A directory: the key of the listing the kernel keeps and may serve again (listings.py),
    # and the lookups of its names since it was last opened.
    listed: tuple | None = None
    looked: int = 0
    aging: bool = False  # in the table's queue of entry inodes by age, to be shed in turn


def _key(inode: Inode) -> tuple:
    if inode.linkid:
        return _link_key(inode.repo, inode.ref, inode.linkid)
    return (inode.kind, inode.repo, inode.ref, inode.path)


def _link_key(repo: str, ref: str, linkid: int) -> tuple:
    return ("link", repo, ref, str(linkid))


def _hashed(key: tuple) -> int:
    """The number a key's hash gives, before any shift for a collision."""
    return xxhash.xxh3_64_intdigest("\0".join(key).encode()) >> 1


class InodeTable:
    """The inodes the kernel knows, by number and by (kind, repo, ref, path)."""

    def __init__(self, kept: int = KEPT):
        self._inodes: dict[int, Inode] = {}
        self._by_key: dict[tuple, int] = {}
        # Names of entries whose inode is not numbered by its path's hash (moved by a rename, or
        # shifted by a collision), by (repo, ref, directory): a plain listing must look these up
        # rather than hash them.
        self._displaced: dict[tuple[str, str, str], set[str]] = {}
        self.kept = kept
        self._made: deque[int] = deque()  # entry inodes by age, oldest first (some forgotten)
        self._prune = hasattr(pyfuse3, "notify_prune")  # (pfsfuse's patch of pyfuse3)
        self._pruned: list[Inode] = []  # what the last shed asked the kernel to forget
        self.add(Inode(pyfuse3.ROOT_INODE, "root", lookups=1))

    def of(self, kind: str, repo: str = "", ref: str = "", path: str = "") -> Inode:
        """The inode of a path: its number is a hash of the path, so it is the same in every
        mount of the same store (unless two paths collide, which shifts one of them)."""
        key = (kind, repo, ref, path)
        ino = self._by_key.get(key)
        if ino is not None:
            inode = self._inodes[ino]
        else:
            inode = Inode(self._number(key), kind, repo, ref, path)
            self._inodes[inode.ino] = inode
            self._bind(key, inode.ino)
        # An inode shed but looked up again before the kernel's FORGET came is aged anew: the
        # kernel holds it again, and the FORGET leaves it in the table.
        if kind == "entry" and path and not inode.aging:
            inode.aging = True
            self._made.append(inode.ino)
            if len(self._made) > self.kept:
                self._shed()
        return inode

    def _shed(self) -> None:
        """Ask the kernel to forget the oldest quarter of the entry inodes it was given; its
        FORGETs then take them out of this table. A name looked up again gets the same number,
        since numbers are hashes of paths. Hard links, known by several names, stay."""
        # Those the last prune left (in use then, or not yet linked by the kernel: a listing's
        # reply is parsed after the request that made their inodes) are aged again.
        for left in self._pruned:
            if not left.aging and self._inodes.get(left.ino) is left:
                left.aging = True
                self._made.append(left.ino)
        oldest = []
        for _ in range(self.kept // 4):
            inode = self._inodes.get(self._made.popleft())
            if inode is None or not inode.aging:
                continue  # forgotten (and perhaps numbered again since, and aged anew)
            inode.aging = False
            if inode.kind == "entry" and not inode.linkid and inode.path:
                oldest.append(inode)
        self._pruned = []
        if self._prune and oldest:
            try:
                for i in range(0, len(oldest), PRUNE_BATCH):
                    pyfuse3.notify_prune([inode.ino for inode in oldest[i : i + PRUNE_BATCH]])
                self._pruned = oldest
                return
            except OSError as e:  # a kernel before 6.18
                log.info("the kernel cannot prune inodes (%s): invalidating their names instead", e)
                self._prune = False
        # Dropping a name takes its directory's lock, which a listing of that directory holds
        # while it reads: during one huge listing, about one name goes per getdents.
        for inode in oldest:
            parent, name = names.split(inode.path)
            parent_ino = self._by_key.get(("entry", inode.repo, inode.ref, parent))
            if parent_ino is not None:
                pyfuse3.invalidate_entry_async(parent_ino, name.encode(), ignore_enoent=True)

    def number(self, repo: str, ref: str, path: str, linkid: int = 0) -> int:
        """The number an entry has or would have, without making it an inode the kernel holds
        (for a plain listing, whose names the kernel does not keep)."""
        key = _link_key(repo, ref, linkid) if linkid else ("entry", repo, ref, path)
        ino = self._by_key.get(key)
        return self._number(key) if ino is None else ino

    def numbering(self, repo: str, ref: str, parent: str) -> Callable[[str, int], int]:
        """`number` for the names of the directory `parent`, which a plain listing asks of each
        name it sends: what the names share is joined once."""
        under = parent + "/" if parent else ""
        prefix = "\0".join(("entry", repo, ref, under))
        inodes, displaced, digest = self._inodes, self._displaced, xxhash.xxh3_64_intdigest
        here = (repo, ref, parent)

        def number(name: str, linkid: int) -> int:
            if linkid:
                return self.number(repo, ref, "", linkid)
            ino = digest((prefix + name).encode()) >> 1
            # Not in the table, nor moved there by a rename: the hash is its number. (An inode
            # under that number is this name's own, or a collision: the table knows which.)
            if ino in inodes or ino <= pyfuse3.ROOT_INODE or name in displaced.get(here, ()):
                return self.number(repo, ref, under + name)
            return ino

        return number

    def numbers(
        self, repo: str, ref: str, parent: str, listed: list[str], links: list[int]
    ) -> tuple[list[bytes], list[int]]:
        """`numbering` for a plain listing's batch of the directory `parent` at once: the names
        in UTF-8 and their numbers. Each is its path's hash, checked against the table in one
        pass; a batch where the table numbers some name otherwise (a hard link, an inode the
        table holds, one moved there by a rename) is numbered a name at a time."""
        under = parent + "/" if parent else ""
        prefix, digest = "\0".join(("entry", repo, ref, under)).encode(), xxhash.xxh3_64_intdigest
        encoded = [name.encode() for name in listed]
        inos = [digest(prefix + name) >> 1 for name in encoded]
        if (
            any(links)
            or not self._inodes.keys().isdisjoint(inos)
            or (inos and min(inos) <= pyfuse3.ROOT_INODE)
            or not self._displaced.get((repo, ref, parent), set()).isdisjoint(listed)
        ):
            number = self.numbering(repo, ref, parent)
            inos = [number(name, link) for name, link in zip(listed, links, strict=True)]
        return encoded, inos

    def _number(self, key: tuple) -> int:
        ino = _hashed(key)
        while ino <= pyfuse3.ROOT_INODE or ino in self._inodes:
            ino = (ino + 1) & ((1 << 63) - 1)
        return ino

    def _bind(self, key: tuple, ino: int) -> None:
        self._by_key[key] = ino
        if key[0] == "entry" and ino != _hashed(key):
            parent, name = names.split(key[3])
            self._displaced.setdefault((key[1], key[2], parent), set()).add(name)
        else:
            self._undisplace(key)

    def _unbind(self, key: tuple, ino: int | None = None) -> int | None:
        """Drop `key` (only if it names `ino`, when given); the number it had."""
        had = self._by_key.get(key)
        if had is not None and (ino is None or had == ino):
            del self._by_key[key]
            self._undisplace(key)
            return had
        return None

    def _undisplace(self, key: tuple) -> None:
        if key[0] == "entry" and self._displaced:
            parent, name = names.split(key[3])
            here = self._displaced.get((key[1], key[2], parent))
            if here is not None:
                here.discard(name)
                if not here:
                    del self._displaced[(key[1], key[2], parent)]

    def linked(self, repo: str, ref: str, path: str, linkid: int) -> Inode:
        """The inode of the hard link `linkid`, known (also) by `path`: the inode the kernel
        already has for `path` becomes the link's, so that a name linked here keeps its number."""
        key = _link_key(repo, ref, linkid)
        ino = self._by_key.get(key)
        if ino is not None:
            inode = self._inodes[ino]
        else:
            ino = self._unbind(("entry", repo, ref, path))
            inode = self._inodes[ino] if ino is not None else Inode(self._number(key), "entry", repo, ref, path)
            inode.linkid = linkid
            self._inodes[inode.ino] = inode
            self._bind(key, inode.ino)
        if inode.names is None:
            inode.names = {inode.path}
        inode.names.add(path)
        return inode

    def unnamed(self, repo: str, ref: str, path: str) -> None:
        """`path` was removed: a hard link's inode goes on by another of its names."""
        for inode in self._inodes.values():
            if inode.linkid and (inode.repo, inode.ref) == (repo, ref) and inode.names and path in inode.names:
                inode.names.discard(path)
                if inode.path == path and inode.names:
                    inode.path = min(inode.names)

    def get(self, ino: int) -> Inode:
        """The inode the kernel names: ESTALE once it is forgotten."""
        inode = self._inodes.get(ino)
        if inode is None:
            raise fail(errno.ESTALE)
        return inode

    def find(self, ino: int) -> Inode | None:
        return self._inodes.get(ino)

    def __len__(self) -> int:
        return len(self._inodes)

    def __contains__(self, ino: int) -> bool:
        return ino in self._inodes

    def add(self, inode: Inode) -> None:
        """An inode numbered elsewhere (or again), under its path."""
        self._inodes[inode.ino] = inode
        self._bind(_key(inode), inode.ino)

    def drop(self, ino: int) -> None:
        """Forget an inode whatever the kernel's count: later forgets for it are ignored."""
        inode = self._inodes.pop(ino, None)
        if inode is not None:
            self._unbind(_key(inode), ino)

    def forget(self, inode_list) -> None:
        for ino, n in inode_list:
            inode = self._inodes.get(ino)
            if inode is None or inode.kind == "root":
                continue
            inode.lookups -= n
            if inode.lookups <= 0:
                del self._inodes[ino]
                self._unbind(_key(inode), ino)

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

        def under(p: str) -> bool:
            return p == path or p.startswith(path + "/")

        moved = [
            i
            for i in self._inodes.values()
            if i.kind == "entry"
            and (i.repo, i.ref) == (repo, ref)
            and (under(i.path) or any(map(under, i.names or ())))
        ]
        for i in moved:
            self._unbind(_key(i))
        for i in moved:
            if i.linkid and new[:2] != (repo, ref):
                i.linkid, i.names = 0, None  # a link of another branch: moved there as a copy
            i.repo, i.ref = new[0], new[1]
            if under(i.path):
                i.path = new[2] + i.path[len(path) :]
            if i.names is not None:
                i.names = {new[2] + p[len(path) :] if under(p) else p for p in i.names}
            stale = self._unbind(("entry", i.repo, i.ref, i.path))
            if stale is not None and stale != i.ino:
                self._inodes.pop(stale, None)  # the replaced target's inode is gone
            self._bind(_key(i), i.ino)
