"""The client interface. `Store` implements it in-process; `RemoteClient` over the daemon's socket.

The remote side derives argument and result types from the annotations here, so this file is the
single description of the API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Annotated, BinaryIO

from msgspec import Meta

from pfsfuse.api.types import (
    NAMES_MAX,
    ContentHash,
    Count,
    DiffResult,
    DirNames,
    FileInfo,
    GcResult,
    ReadPlan,
    RepoInfo,
    RestoreResult,
    Seconds,
    WriteOp,
    WriteResult,
)
from pfsfuse.chunks.location import ChunkLoc
from pfsfuse.metadata.records import Branch, BranchRef, ChunkRef, Commit, CommitRef, Node, Page

_ETAGS_MAX = 1000  # a page of an S3 listing
TREE_PAGES_MAX = 4096  # tree pages a request may ask for


class Client(ABC):
    # -- repos
    @abstractmethod
    def create_repo(self, name: str, description: str = "", update: bool = False) -> RepoInfo: ...

    @abstractmethod
    def inspect_repo(self, name: str) -> RepoInfo: ...

    @abstractmethod
    def list_repo(self) -> list[RepoInfo]: ...

    @abstractmethod
    def delete_repo(self, name: str, force: bool = False) -> None: ...

    # -- commits
    @abstractmethod
    def start_commit(
        self,
        repo: str,
        branch: str | None = None,
        parent: str | None = None,
        description: str = "",
        provenance: list[CommitRef] | None = None,
    ) -> Commit: ...

    @abstractmethod
    def finish_commit(self, repo: str, ref: str, description: str | None = None) -> Commit: ...

    @abstractmethod
    def inspect_commit(self, repo: str, ref: str) -> Commit: ...

    @abstractmethod
    def list_commit(
        self, repo: str, ref: str | None = None, number: Count | None = None, since: str | None = None
    ) -> list[Commit]: ...

    @abstractmethod
    def delete_commit(self, repo: str, ref: str) -> list[CommitRef]: ...

    @abstractmethod
    def subscribe_commit(
        self, repo: str, branch: str, since: str | None = None, new_only: bool = False
    ) -> Iterator[Commit]:
        """Finished commits on `branch`, oldest first, then each new one as it is finished."""

    # -- branches
    @abstractmethod
    def create_branch(
        self,
        repo: str,
        name: str,
        head: str | None = None,
        provenance: list[BranchRef] | None = None,
    ) -> Branch: ...

    @abstractmethod
    def inspect_branch(self, repo: str, name: str) -> Branch: ...

    @abstractmethod
    def list_branch(self, repo: str) -> list[Branch]: ...

    @abstractmethod
    def delete_branch(self, repo: str, name: str, force: bool = False) -> None: ...

    # -- files
    @abstractmethod
    def write_files(self, repo: str, ref: str, ops: Iterable[WriteOp], listings: bool = False) -> WriteResult:
        """Apply `ops` in order to `ref`: an open commit, or a branch (its open head, else a new
        commit that is finished when the write completes). They land together or not at all.
        With `listings`, the answer carries the listings of the small directories they changed."""

    @abstractmethod
    def get_file(
        self, repo: str, ref: str, path: str, offset: Count = 0, length: Count | None = None
    ) -> Iterator[bytes]:
        """A file between its directory's header and footer; a directory's header and footer;
        or, for a glob pattern, the matching files in path order, each directory's header and
        footer once around its files."""

    @abstractmethod
    def read_plan(self, repo: str, ref: str, path: str) -> ReadPlan: ...

    @abstractmethod
    def read_plans(
        self, repo: str, ref: str, path: str = "", start_after: str | None = None, limit: Count | None = None
    ) -> list[ReadPlan]:
        """A page of the read plans of `path` and everything under it, in path order (`path`
        itself first; directories and symlinks have no chunks), after the entry at path
        `start_after`: at most `limit` (and PLANS_PAGE) plans, fewer past PLANS_CHUNKS chunks, and
        none after the last. For a checkout."""

    def plan_bytes(
        self, repo: str, ref: str, plan: ReadPlan, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """A planned file's bytes (from `offset`, `length` of them): clients that read the store
        themselves follow the plan, so ranges of one file cost one plan."""
        return self.get_file(repo, ref, plan.info.path, offset, length)

    @abstractmethod
    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo: ...

    @abstractmethod
    def list_file(
        self,
        repo: str,
        ref: str,
        path: str = "",
        start_after: str | None = None,
        limit: Count | None = None,
        history: Annotated[int, Meta(ge=-1, le=2**63 - 1)] = 0,
    ) -> list[FileInfo]:
        """With `history` N (-1: all), each entry is followed by its earlier versions in the
        ancestry of `ref`, up to N versions in all, each with the commit that wrote it."""

    @abstractmethod
    def walk_file(
        self, repo: str, ref: str, path: str = "", start_after: str | None = None, limit: Count | None = None
    ) -> list[FileInfo]:
        """`path` and everything under it, in pre-order; a page of it after the entry at path
        `start_after` (which need not exist), at most `limit` entries."""

    @abstractmethod
    def glob_file(self, repo: str, ref: str, pattern: str) -> list[FileInfo]: ...

    @abstractmethod
    def glob_nodes(self, repo: str, ref: str, pattern: str) -> list[tuple[str, Node]]:
        """What glob_file matches, as tree nodes (for walking, hashing, copying by reference)."""

    @abstractmethod
    def etags(self, repo: str, hashes: Annotated[list[ContentHash], Meta(max_length=_ETAGS_MAX)]) -> list[str]:
        """The S3 ETag recorded for each file content hash in `repo` (by a Put's `etag`), "" where
        none was."""

    @abstractmethod
    def diff_file(
        self,
        new_repo: str,
        new_ref: str,
        new_path: str = "",
        old_repo: str | None = None,
        old_ref: str | None = None,
        old_path: str | None = None,
        shallow: bool = False,
    ) -> DiffResult: ...

    # -- immutable objects by hash, for clients that walk trees themselves (the mount)
    @abstractmethod
    def dir_entries(
        self, root: bytes, start_after: str | None = None, limit: Count | None = None
    ) -> list[tuple[str, Node]]:
        """Entries of the directory whose top page is `root`, in name order."""

    @abstractmethod
    def dir_names(
        self, root: bytes, start_after: str | None = None, limit: Annotated[int, Meta(ge=1, le=NAMES_MAX)] = NAMES_MAX
    ) -> DirNames:
        """`dir_entries` as names, types and link ids only: what a plain listing (the mount's
        READDIR for find and ls -f) needs of a big directory."""

    @abstractmethod
    def dir_child(self, root: bytes, name: str) -> Node | None: ...

    @abstractmethod
    def tree_pages(self, hashes: Annotated[list[bytes], Meta(max_length=TREE_PAGES_MAX)]) -> list[Page]:
        """Tree pages by hash (`pfsfuse.metadata.tree`), for clients that cache pages, not
        listings: a lookup in a huge directory reads a page per level."""

    @abstractmethod
    def chunk_list(self, file_hash: bytes) -> list[ChunkRef]:
        """The chunks of a file whose list is not inline (FileNode.chunks is None)."""

    @abstractmethod
    def chunk_locations(self, hashes: list[bytes]) -> list[ChunkLoc]: ...

    @abstractmethod
    def read_chunk(self, chunk: ChunkRef) -> bytes:
        """A chunk's bytes, verified by the daemon (for clients without access to the store)."""

    # -- admin
    @abstractmethod
    def fsck(self) -> list[str]:
        """Every broken invariant, one line each; empty when the store is sound."""

    @abstractmethod
    def garbage_collect(self, dry_run: bool = False, orphan_age: Seconds = 3600.0) -> GcResult:
        """Delete the chunks and tree pages no commit refers to, while serving on. Unindexed
        packs (left by a crashed write) go once first seen at least `orphan_age` seconds ago."""

    @abstractmethod
    def extract(self, objects: bool = True) -> Iterator[bytes]:
        """A dump of every repo, commit and branch and, with `objects`, of their data."""

    @abstractmethod
    def restore(self, dump_file: BinaryIO) -> RestoreResult:
        """Rebuild an extracted dump, read from a binary file, into this empty store."""

    @abstractmethod
    def version(self) -> str: ...

    def close(self) -> None:  # noqa: B027 (optional: most clients hold nothing to release)
        """Release connections or the store."""
