"""Values the API returns beside the index records (`pfsfuse.metadata.records`)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from pfsfuse.chunks import ChunkLoc
from pfsfuse.metadata import etags
from pfsfuse.metadata.records import ChunkRef, DirNode, Node, SpecialKind, Stat, Xattrs

# Numbers a caller sends, bounded at the API's boundary (decoding fails on anything else).
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, Meta(ge=0, le=10**9)]
# A symlink's target, as the kernel takes it: not empty, no NUL, at most PATH_MAX bytes.
LinkTarget = Annotated[str, Meta(min_length=1, max_length=4095, pattern="^[^\x00]+$")]
ContentHash = Annotated[str, Meta(pattern="^[0-9a-f]{32}$")]  # FileInfo.hash of a file
Digest = bytes  # a content hash, named apart from WriteResult.bytes
MAX_CHANGED = 4096  # byte ranges a Put's `changed` may list; a writer with more sends the file whole


class RepoInfo(Struct, omit_defaults=True):
    name: str
    created: float
    description: str = ""
    size: int = 0  # bytes at the head of master, as in Pachyderm
    branches: list[str] = []


class FileInfo(Struct, omit_defaults=True):
    path: str  # canonical: no leading '/', '' for the root
    type: str  # "file", "dir", "symlink", or "fifo", "socket", "char", "block" (no content)
    size: int = 0
    hash: str = ""  # hex content hash (files: the chunk-list hash; dirs: the top page)
    children: int = 0  # directories: direct entries
    target: str = ""  # symlinks
    executable: bool = False
    commit: str = ""  # list-file --history: the commit that wrote this version
    rdev: int = 0  # a device node's device number
    # The entry's kept mode (permission bits), owner and times (ns), where it has them.
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: int | None = None
    ctime: int | None = None
    atime: int | None = None
    link: int | None = None  # a hard link: the files of the commit with this id are one file
    nlink: int | None = None  # its names
    xattrs: dict[str, bytes] | None = None  # user extended attributes


# The operations of `write_files`, applied in order as one atomic change of a commit.


class Put(Struct, tag="put", omit_defaults=True):
    """Write a file from a stream (in-process only; remote clients send the bytes along), a path
    on the daemon's host (unix socket only), or a URL."""

    path: str
    local: str | None = None
    url: str | None = None
    # An object-store URL names a prefix: every object under it is put under `path`, at its
    # path relative to the prefix (pfsfuse.ingress).
    recursive: bool = False
    stream: Any = None
    append: bool = False
    executable: bool | None = None  # None keeps the bit of the file it replaces
    # "line", "json" or "sql": `path` becomes a directory of records named by 16-digit hex
    # index, each holding at most `target_datums` datums and `target_bytes` bytes (one datum
    # when both are 0); a later split to the same path continues the numbering.
    split: str | None = None
    target_datums: Count = 0
    target_bytes: Count = 0
    # "header" or "footer": the data becomes that of directory `path` (empty, or a lone
    # newline, removes it).
    frame: str | None = None
    # Data the client stored in packs itself (direct writes): the file's chunks and where they
    # lie, and `proof`, their encoding (`located_bytes`) signed with the store's seed.
    chunks: list[tuple[ChunkRef, ChunkLoc]] | None = None
    proof: bytes = b""
    stat: Stat | None = None  # None keeps the stat of the file it replaces, its mtime made now
    # User extended attributes the file gets instead of its own (an S3 object's metadata);
    # None keeps them.
    xattrs: Xattrs | None = None
    # The S3 ETag a client was given for these bytes (the S3 gateway's), kept for the repo's
    # file of this content (pfsfuse.metadata.etags).
    etag: Annotated[str, Meta(pattern=etags.PATTERN)] | None = None
    # A mount's fsync of a big file: `local` equals the file at `path` whose content hash is
    # `since`, except in the byte ranges (offset, length) `changed` lists, so the daemon keeps
    # that file's other chunks and cuts again only those the ranges touch (chunks/recut.py). A
    # hint: when the file at `path` is not `since` (or the data is not `local`), the whole file
    # is read. Giving `changed` (even empty) asks for the content hash stored, in
    # `WriteResult.contents`.
    since: Annotated[bytes, Meta(min_length=16, max_length=16)] | None = None
    changed: Annotated[list[tuple[Count, Count]], Meta(max_length=MAX_CHANGED)] | None = None
    # With `changed`: the writer's last put of this content (a close). The touched chunks are cut
    # as put-file cuts, so the file's chunks and content hash are put-file's (if `since`'s were);
    # otherwise (an fsync, more writes to come) finely, so the next small write costs little.
    final: bool = False
    # With `since`: the ref (of the same repo) whose file at `path` is `since`; by default the
    # commit written. A close names the committed file it copied on write, whose chunks are
    # put-file's, so that its cut is put-file's too.
    since_ref: str | None = None
    # With `changed`: `local` holds only the bytes of the `changed` ranges (a sparse copy on
    # write); the rest is `since`'s, read from its chunks. When `since` is not there to read,
    # the put fails with BaseChanged instead of reading `local` whole.
    sparse: bool = False


def located_bytes(located: list[tuple[ChunkRef, ChunkLoc]]) -> bytes:
    """The bytes a direct write's proof signs: the same on the client and the daemon."""
    import msgspec

    return msgspec.msgpack.encode(located)


class Copy(Struct, tag="copy", omit_defaults=True):
    """Put a reference to an existing file or directory at `path`: no data is copied."""

    path: str
    src_repo: str
    src_ref: str
    src_path: str
    overwrite: bool = True
    append: bool = False  # a file: append the source's content to the file at `path`
    # A hard link (the source a file of the same commit): `path` becomes another name of it,
    # sharing its content and stat from now on. A copy without it is a file of its own.
    link: bool = False
    xattrs: Xattrs | None = None  # a file's user extended attributes instead of the source's


class Delete(Struct, tag="delete", omit_defaults=True):
    path: str
    missing_ok: bool = False


class Mkdir(Struct, tag="mkdir"):
    """Make an empty directory unless one is there (with `stat`, given the stat either way)."""

    path: str
    stat: Stat | None = None


class Symlink(Struct, tag="symlink"):
    path: str
    target: LinkTarget
    stat: Stat | None = None


class Chmod(Struct, tag="chmod"):
    path: str
    executable: bool


class SetStat(Struct, tag="stat"):
    """Give the entry at `path` (of any kind) a mode, owner and times: its content is unchanged."""

    path: str
    stat: Stat


class Mknod(Struct, tag="mknod"):
    """Make a FIFO, socket or device node at `path` (replacing what is there)."""

    path: str
    kind: SpecialKind
    rdev: int = 0
    stat: Stat | None = None


class Dated(Struct, tag="dated"):
    """The directory at `path` gained or lost entries at `at` (nanoseconds since the epoch, by
    the writer's clock): if the batch changes its entries, its mtime and ctime take that time,
    which the writer has shown since, instead of the time the daemon applies the batch."""

    path: str
    at: Count


WriteOp = Put | Copy | Delete | Mkdir | Symlink | Chmod | SetStat | Mknod | Dated


# A directory's whole listing, by the hash of its top tree page (its root).
Listing = tuple[bytes, list[tuple[str, Node]]]


class WriteResult(Struct):
    commit: str  # the commit written to
    files: int = 0  # files put
    bytes: int = 0  # bytes put
    stored: int = 0  # bytes of new chunks stored (after dedup and compression)
    # The commit's tree after the write: a writer showing the branch (a mount) need not ask.
    tree: DirNode | None = None
    # Asked for with `listings`: (root, entries) of each small directory the write changed, so
    # that a writer showing them need not ask for them again at once.
    listings: list[Listing] = []
    # The content hash each Put that gave `changed` stored, in the order of those Puts.
    contents: list[Digest] = []


# read_plans answers at most this many plans, and stops adding files once it has located this
# many chunks: bounds on the daemon's memory and on an answer's size.
PLANS_PAGE = 4096
PLANS_CHUNKS = 65_536


class ReadPlan(Struct):
    """Where a file's bytes live, for clients that read the object store themselves."""

    info: FileInfo
    chunks: list[tuple[ChunkRef, ChunkLoc]]


# Entries a dir_names answer may hold.
NAMES_MAX = 65_536


class DirNames(Struct, array_like=True):
    """A page of a directory's listing with only what a plain READDIR shows, side by side: each
    entry's name, its S_IF* type and its hard link id (0 for none); and, for a file of one chunk,
    that chunk's hash and size (else b"" and 0), for a client that fetches small files ahead of
    a copy. Cheaper to send and to read than the entries' nodes."""

    names: list[str]
    types: list[int]
    links: list[int]
    chunks: list[bytes]
    sizes: list[int]


class DiffResult(Struct):
    new: list[FileInfo]
    old: list[FileInfo]


class Traffic(Struct):
    """File data bytes the daemon moved for its API clients since it started: a client that reads
    and writes the object store itself makes neither grow."""

    served: int = 0  # sent: get-file, chunks, extract
    received: int = 0  # put-file data and restore bodies


class GcResult(Struct):
    """What a garbage collection freed (or, in a dry run, would free)."""

    dry_run: bool = False
    chunks: int = 0  # chunk copies deleted from packs
    chunk_bytes: int = 0  # their stored bytes
    packs_deleted: int = 0
    packs_rewritten: int = 0  # packs copied without their dead chunks
    orphan_packs: int = 0  # packs no index entry ever referred to (a crashed or failed write)
    orphans_waiting: int = 0  # such packs kept until they are older than the orphan age
    pages: int = 0  # tree pages and chunk lists deleted
    page_bytes: int = 0
    seconds: float = 0.0


class RestoreResult(Struct):
    repos: int = 0
    commits: int = 0
    branches: int = 0
    chunks: int = 0  # chunks restored
    bytes: int = 0  # their raw bytes
    auth: bool = False  # whether the dump's auth records (ACLs, admins, tokens) were restored
