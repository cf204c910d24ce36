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


class PutSource(Struct, omit_defaults=True):
    """One file to write: from a stream (in-process only), a path on the daemon's host, or a URL."""

    path: str
    local: str | None = None
    url: str | None = None
    stream: Any = None


class PutResult(Struct):
    commit: str  # the commit written to
    files: int = 0
    bytes: int = 0  # logical bytes written
    stored: int = 0  # bytes of new chunks stored (after dedup and compression)


class ReadPlan(Struct):
    """Where a file's bytes live, for clients that read the object store themselves."""

    info: FileInfo
    chunks: list[tuple[ChunkRef, ChunkLoc]]


class DiffResult(Struct):
    new: list[FileInfo]
    old: list[FileInfo]
