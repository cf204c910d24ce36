"""The records the index stores and the API hands out.

Tree nodes and pages are array-like (they are the bulk of the index); repos, branches and commits
are maps with defaults omitted so that `--json` output stays readable. Every stored value starts
with a format byte so that a later release can migrate old records.

Tree nodes and pages are values that never refer back to themselves, so they are left out of the
cyclic garbage collector (`gc=False`): collections walking the pages a listing of a huge
directory decodes took a fifth of the daemon's CPU, and half of the listing's time.
"""

from __future__ import annotations

import stat as _stat
from typing import Annotated, Literal

import msgspec
from msgspec import Struct

FORMAT = 1

_U32 = Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)]
_NS = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
_LINK = Annotated[int, msgspec.Meta(ge=1, le=(1 << 63) - 1)]
Xattrs = tuple[tuple[str, bytes], ...]  # user extended attributes, sorted by name (names.xattrs)


class Stat(Struct, array_like=True, frozen=True, gc=False):
    """What a disk keeps about an entry beside its content: never part of a content hash, so a
    touched or chmodded file keeps its identity (and its datums). Entries without one (older
    records, put-file without it) show defaults; older stats (five fields) read as before."""

    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)]  # permission bits, setuid/setgid/sticky too
    uid: _U32
    gid: _U32
    mtime: _NS  # nanoseconds since the epoch
    ctime: _NS
    atime: _NS | None = None  # set by utimensat only (reads do not move it); None shows the mtime
    # A hard link: the files of a commit with the same link id are names of one file, sharing
    # content and stat; `nlink` counts them. Kept by the store, which ignores what a write says.
    link: _LINK | None = None
    nlink: Annotated[int, msgspec.Meta(ge=1)] | None = None
    xattrs: Xattrs | None = None


class ChunkRef(Struct, array_like=True, frozen=True, gc=False):
    hash: bytes  # 16-byte keyed xxh3-128 of the raw chunk bytes
    size: int  # raw (uncompressed) length


class FileNode(Struct, tag="f", array_like=True, frozen=True, gc=False):
    size: int
    # Keyed hash of the encoded chunk list: the file's content identity. When `chunks` is None the
    # list is too long to inline and is stored as a blob under this hash.
    hash: bytes
    chunks: tuple[ChunkRef, ...] | None = ()
    executable: bool = False
    stat: Stat | None = None


class SymlinkNode(Struct, tag="l", array_like=True, frozen=True, gc=False):
    target: str
    stat: Stat | None = None

    @property
    def size(self) -> int:
        return len(self.target.encode())


class DirNode(Struct, tag="d", array_like=True, frozen=True, gc=False):
    size: int = 0  # bytes in the whole subtree (headers and footers not included)
    count: int = 0  # direct children
    root: bytes | None = None  # hash of the top page; None when the directory is empty
    # Read before and after each file of the directory (a split file's header and footer).
    header: FileNode | None = None
    footer: FileNode | None = None
    stat: Stat | None = None
    # Direct children that are directories (a disk's link count is 2 plus these). None in a
    # directory stored before they were counted, until a change counts them (tree._update).
    subdirs: int | None = None

    @property
    def framed(self) -> bool:
        return self.header is not None or self.footer is not None

    @property
    def nlink(self) -> int:
        """Its link count as a disk shows it; 1 (as btrfs does: "not counted") when unknown."""
        if self.root is None:
            return 2
        return 1 if self.subdirs is None else 2 + self.subdirs


SpecialKind = Literal["fifo", "socket", "char", "block"]
# The file type bits of each kind (st_mode & S_IFMT).
SPECIAL_MODES: dict[SpecialKind, int] = {
    "fifo": _stat.S_IFIFO,
    "socket": _stat.S_IFSOCK,
    "char": _stat.S_IFCHR,
    "block": _stat.S_IFBLK,
}


class SpecialNode(Struct, tag="s", array_like=True, frozen=True, gc=False):
    """A FIFO, socket or device node: it has no content; its kind and device number are all."""

    kind: SpecialKind
    rdev: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)] = 0  # devices: major and minor
    stat: Stat | None = None

    @property
    def size(self) -> int:
        return 0


Node = FileNode | DirNode | SymlinkNode | SpecialNode


def node_type(node: Node) -> int:
    """The S_IF* file type bits a disk shows for a node."""
    bits = _NODE_TYPES.get(type(node))
    if bits is not None:
        return bits
    if isinstance(node, SpecialNode):
        return SPECIAL_MODES[node.kind]
    return next(bits for kind, bits in _NODE_TYPES.items() if isinstance(node, kind))  # a subclass's


_NODE_TYPES: dict[type, int] = {FileNode: _stat.S_IFREG, DirNode: _stat.S_IFDIR, SymlinkNode: _stat.S_IFLNK}


def link_of(node: Node | None) -> int | None:
    """The hard link id of a file, symlink or special file that has one."""
    if node is None or isinstance(node, DirNode) or node.stat is None:
        return None
    return node.stat.link


EMPTY_DIR = DirNode(subdirs=0)


class Leaf(Struct, tag="L", array_like=True, frozen=True, gc=False):
    entries: list[tuple[str, Node]]  # sorted by name


class Inner(Struct, tag="I", array_like=True, frozen=True, gc=False):
    level: int  # 1 above the leaves
    # (first name in the child, child page hash, bytes under the child, entries under the child)
    children: list[tuple[str, bytes, int, int]]


Page = Leaf | Inner


class CommitRef(Struct, frozen=True):
    repo: str
    id: str


class BranchRef(Struct, frozen=True):
    repo: str
    name: str


class Repo(Struct, omit_defaults=True):
    name: str
    created: float
    description: str = ""


class Branch(Struct, omit_defaults=True):
    repo: str
    name: str
    head: str | None = None
    provenance: list[BranchRef] = []


class Commit(Struct, omit_defaults=True):
    repo: str
    id: str
    started: float
    parent: str | None = None
    children: list[str] = []
    branch: str | None = None  # the branch the commit was started on
    finished: float | None = None
    description: str = ""
    tree: DirNode = EMPTY_DIR  # for an open commit, its working tree
    provenance: list[CommitRef] = []

    @property
    def size(self) -> int:
        return self.tree.size

    @property
    def ref(self) -> CommitRef:
        return CommitRef(self.repo, self.id)


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder] = {}
_PREFIX = bytes([FORMAT])


def encode(obj) -> bytes:
    return _PREFIX + _encoder.encode(obj)


def body(data: bytes) -> memoryview:
    """The msgpack of a stored record: what the API sends of a tree page, undecoded."""
    return memoryview(data)[1:]


def decode(kind, data: bytes):
    if data[:1] != _PREFIX:
        raise ValueError(f"unknown record format {data[:1]!r}")
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.msgpack.Decoder(kind)
    return dec.decode(memoryview(data)[1:])


# How a stored page begins past the array header (its tag), apart from a chunk list (a blob).
_PAGE_TAGS = frozenset(encode(p)[2:4] for p in (Leaf([]), Inner(1, [])))


def is_page(data: bytes) -> bool:
    """Whether stored `data` is a tree page, not a chunk list stored beside the pages."""
    return data[:1] == _PREFIX and data[2:4] in _PAGE_TAGS
