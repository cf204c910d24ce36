"""Which directory listings the kernel keeps and serves again without asking the mount.

A directory opened with FOPEN_CACHE_DIR has its listing copied into the kernel's page cache as
it is read; a later opendir answered with FOPEN_KEEP_CACHE is served from there, at the speed
of a disk's listing. The mount keeps a listing only when both hold:

- the directory is unchanged: its key (the hash of its tree page) is the one it had when the
  kernel cached it, and no handle of another version of it was open meanwhile (two readers
  could fill the cache from two versions); a directory with pending writes is never cached;
- its last reader listed it plainly (find, ls -f). A cached listing comes without attributes,
  so a reader that stats what it lists (ls -l) would look up each name, one request each,
  instead of getting them with the listing. So once a reader of a cached listing has looked up
  a few of its files, the mount drops the kernel's copy, and the kernel reads the rest of the
  listing, with attributes, from the mount.

Needs pyfuse3 with `FileInfo.cache_readdir` (packaging/pyfuse3.patch); without it, opendir
returns a plain handle and every listing is read through the mount.
"""

from __future__ import annotations

import pyfuse3

from pfsfuse.metadata.records import DirNode
from pfsfuse.mount.inodes import Inode
from pfsfuse.mount.resolve import DirHandle

SUPPORTED = hasattr(pyfuse3.FileInfo(), "cache_readdir")

# Lookups of files (not directories: find looks up those it walks into) after a cached listing
# past which its reader is taken to stat what it lists.
STATS = 64


def key_of(node: DirNode) -> tuple:
    """What a directory's listing is made of: the same key, the same names and types."""
    return ("tree", node.root, node.count)


class KernelListings:
    def __init__(self, enabled: bool):
        self.enabled = enabled and SUPPORTED
        self.reads = 0  # readdir requests the mount answered (the kernel's cache answers the rest)

    def opened(self, h: DirHandle, fh: int, others: list[DirHandle]):
        """What opendir returns for the new handle `h` (numbered `fh`); `others` are the other open
        handles of its directory."""
        if not self.enabled:
            return fh
        inode = h.inode
        # Handles of the same version may fill the cache together (find keeps one open to come
        # back to); two versions at once would mix theirs.
        others = [o for o in others if o.key != h.key or o.key is None]
        for o in others:
            o.shared = True
        h.shared = bool(others)
        h.kept = h.key is not None and not h.shared and inode.listed == h.key
        if not h.kept:
            inode.listed = None  # the kernel drops what it cached
        inode.looked = 0
        return pyfuse3.FileInfo(fh=fh, keep_cache=h.kept, cache_readdir=h.key is not None)

    def read(self, h: DirHandle, start: int, plus: bool) -> None:
        """A readdir from entry `start`; the kernel lists plainly once its reader stops statting."""
        self.reads += 1
        if start > 0:
            if plus:
                h.stated = True
            else:
                h.plain = True

    @staticmethod
    def looked_up(parent: Inode, entry) -> None:
        """A name of `parent` was looked up, and is `entry`."""
        if parent.listed is None or isinstance(entry, DirNode):
            return
        parent.looked += 1
        if parent.looked > STATS:
            parent.listed = None
            try:
                pyfuse3.invalidate_inode(parent.ino)  # its listing goes from the kernel's page cache
            except OSError:
                pass  # the kernel has forgotten the directory, and its cached listing with it

    def closed(self, h: DirHandle) -> None:
        """The handle `h` is released: remember whether the kernel's copy may serve the next reader."""
        if not self.enabled or h.key is None:
            return
        inode = h.inode
        if h.shared:
            inode.listed = None
        elif not h.kept and h.plain and not h.stated:
            inode.listed = h.key
