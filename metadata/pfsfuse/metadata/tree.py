"""Merkle trees of directories, stored as content-addressed sorted pages (a prolly tree).

SPEC (to be implemented; this docstring becomes the module's real docstring once done):

A directory is a sequence of (name, Node) entries sorted by name (Python str order). It is cut into
Leaf pages; boundaries are content defined: an entry ends a page when the keyed hash of its name
(with the level mixed in) is 0 modulo FANOUT. Levels above hold Inner pages whose entries are
(first name of child, child hash, child bytes, child entry count), cut by the same rule applied to
the child's first name at that level. The top page's hash is `DirNode.root`. Because boundaries
depend only on names, the pages (and so every hash) depend only on the directory's contents, not on
the history of edits: two equal directories have equal `DirNode`s. Unchanged pages are shared
between commits, and a change rewrites only the pages on the paths to the changed entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from pfsfuse.metadata.records import ChunkRef, DirNode, FileNode, Node, Page

FANOUT = 32  # expected entries per page
INLINE_CHUNKS = 4  # longer chunk lists are stored as a blob under the file's hash


class PageReader(Protocol):
    def page(self, h: bytes) -> Page: ...
    def blob(self, h: bytes) -> bytes: ...
    def hash(self, data) -> bytes: ...


class PageWriter(PageReader, Protocol):
    def put_page(self, page: Page) -> bytes: ...
    def put_blob(self, data: bytes) -> bytes: ...


def make_file(dst: PageWriter, chunks: Sequence[ChunkRef], executable: bool = False) -> FileNode:
    raise NotImplementedError


def file_chunks(src: PageReader, node: FileNode) -> tuple[ChunkRef, ...]:
    raise NotImplementedError


def lookup(src: PageReader, root: DirNode, path: str) -> Node | None:
    raise NotImplementedError


def child(src: PageReader, d: DirNode, name: str) -> Node | None:
    raise NotImplementedError


def list_dir(
    src: PageReader, d: DirNode, start_after: str | None = None
) -> Iterator[tuple[str, Node]]:
    raise NotImplementedError


def walk(src: PageReader, d: DirNode, prefix: str = "") -> Iterator[tuple[str, Node]]:
    raise NotImplementedError


def apply(dst: PageWriter, root: DirNode, changes: Mapping[str, Node | None]) -> DirNode:
    raise NotImplementedError


def diff(
    src: PageReader, new: DirNode, old: DirNode, prefix: str = ""
) -> Iterator[tuple[str, Node | None, Node | None]]:
    raise NotImplementedError


def refs(src: PageReader, d: DirNode, seen: set[bytes]) -> Iterator[tuple[str, bytes]]:
    raise NotImplementedError
