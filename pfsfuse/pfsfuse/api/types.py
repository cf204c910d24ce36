"""Values the API returns beside the index records (`pfsfuse.metadata.records`)."""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from pfsfuse.chunks import ChunkLoc
from pfsfuse.metadata.records import ChunkRef


class RepoInfo(Struct, omit_defaults=True):
    name: str
    created: float
    description: str = ""
    size: int = 0  # bytes at the head of master, as in Pachyderm
    branches: list[str] = []


class FileInfo(Struct, omit_defaults=True):
    path: str  # canonical: no leading '/', '' for the root
    type: str  # "file", "dir" or "symlink"
    size: int = 0
    hash: str = ""  # hex content hash (files: the chunk-list hash; dirs: the top page)
    children: int = 0  # directories: direct entries
    target: str = ""  # symlinks
    executable: bool = False


# The operations of `write_files`, applied in order as one atomic change of a commit.


class Put(Struct, tag="put", omit_defaults=True):
    """Write a file from a stream (in-process only; remote clients send the bytes along), a path
    on the daemon's host (unix socket only), or a URL."""

    path: str
    local: str | None = None
    url: str | None = None
    stream: Any = None
    append: bool = False
    executable: bool | None = None  # None keeps the bit of the file it replaces


class Copy(Struct, tag="copy", omit_defaults=True):
    """Put a reference to an existing file or directory at `path`: no data is copied."""

    path: str
    src_repo: str
    src_ref: str
    src_path: str
    overwrite: bool = True
    append: bool = False  # a file: append the source's content to the file at `path`


class Delete(Struct, tag="delete", omit_defaults=True):
    path: str
    missing_ok: bool = False


class Mkdir(Struct, tag="mkdir"):
    """Make an empty directory unless one is there."""

    path: str


class Symlink(Struct, tag="symlink"):
    path: str
    target: str


class Chmod(Struct, tag="chmod"):
    path: str
    executable: bool


WriteOp = Put | Copy | Delete | Mkdir | Symlink | Chmod


class WriteResult(Struct):
    commit: str  # the commit written to
    files: int = 0  # files put
    bytes: int = 0  # bytes put
    stored: int = 0  # bytes of new chunks stored (after dedup and compression)


class ReadPlan(Struct):
    """Where a file's bytes live, for clients that read the object store themselves."""

    info: FileInfo
    chunks: list[tuple[ChunkRef, ChunkLoc]]


class DiffResult(Struct):
    new: list[FileInfo]
    old: list[FileInfo]
