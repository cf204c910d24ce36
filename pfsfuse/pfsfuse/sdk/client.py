"""`pfsfuse.Client`: the public Python API, with python-pachyderm 1.x's verb names.

A thin facade over the daemon's client interface (`pfsfuse.api.client.Client`) and its pipeline
API: every call goes through the daemon and its checks. File data is read straight from the
object store, and verified, when this process may read it (as the CLI does); otherwise it streams
through the daemon.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

import msgspec

from pfsfuse.api.client import Client as _Api
from pfsfuse.api.types import (
    Copy,
    Delete,
    DiffResult,
    FileInfo,
    Put,
    RepoInfo,
    WriteOp,
    WriteResult,
)
from pfsfuse.home import Home
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.metadata.records import Branch, BranchRef, Commit, CommitRef
from pfsfuse.sdk import refs
from pfsfuse.sdk.refs import CommitArg, FileArg, HasCommit
from pfsfuse.sdk.streams import PiecesIO, reader

if TYPE_CHECKING:
    from pfsfuse.scheduler.api import RemotePipelines

_PAGE = 1000  # list_file entries fetched per request

Body = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]


def _stream(value: Body) -> IO[bytes]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return io.BytesIO(value)
    if hasattr(value, "read"):
        return value  # type: ignore[return-value]
    if isinstance(value, Iterable) and not isinstance(value, str):
        return io.BufferedReader(PiecesIO(iter(value)))
    raise InvalidArgument(
        f"file contents must be bytes, a binary file or an iterable of bytes, not {type(value).__name__}"
    )


class Client:
    """A connection to a pfs daemon.

    `Client()` finds the daemon as the `pfs` command does: `PFS_ADDRESS` if set (`unix:/path` or
    `host:port`), else the daemon of `PFS_HOME` (started when `start_daemon` is true). `address`
    names one explicitly. Over TCP, `store_dir` (default `PFS_STORE_DIR`), a directory holding a
    copy of the store's store.json, lets it read chunks from the object store itself. Use it as a
    context manager, or call `close()`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        home: str | os.PathLike | None = None,
        start_daemon: bool = False,
        store_dir: str | os.PathLike | None = None,
    ):
        from pfsfuse.api.remote import RemoteClient

        self._api: _Api
        if address is None:
            from pfsfuse.api.connect import connect

            self._api = connect(Home(home) if home is not None else None, start=start_daemon)
        elif address.startswith("unix:"):
            # A socket inside a PFS_HOME: its store may be readable here for direct chunk reads.
            self._api = RemoteClient(address, Home(home or os.path.dirname(address[5:])))
        else:
            store_dir = store_dir or os.environ.get("PFS_STORE_DIR")
            self._api = RemoteClient(address, Home(store_dir) if store_dir else None)
        self._pipelines: RemotePipelines | None = None

    @classmethod
    def wrap(cls, api: _Api) -> Client:
        """A facade over an existing internal client (the CLI's, the gateway's)."""
        self = cls.__new__(cls)
        self._api = api
        self._pipelines = None
        return self

    @property
    def api(self) -> _Api:
        """The internal client interface under this facade."""
        return self._api

    @property
    def address(self) -> str:
        return self._api.address  # type: ignore[attr-defined]

    def close(self) -> None:
        self._api.close()
        if self._pipelines is not None:
            self._pipelines.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def version(self) -> str:
        return self._api.version()

    # -- repos --------------------------------------------------------------------------------

    def create_repo(self, repo_name: str, description: str = "", update: bool = False) -> RepoInfo:
        return self._api.create_repo(repo_name, description, update)

    def inspect_repo(self, repo_name: str) -> RepoInfo:
        return self._api.inspect_repo(repo_name)

    def list_repo(self) -> list[RepoInfo]:
        return self._api.list_repo()

    def delete_repo(self, repo_name: str, force: bool = False) -> None:
        self._api.delete_repo(repo_name, force)

    # -- commits ------------------------------------------------------------------------------

    def start_commit(
        self,
        repo_name: str,
        branch: str | None = None,
        parent: str | HasCommit | None = None,
        description: str = "",
        provenance: Iterable[CommitArg] = (),
    ) -> Commit:
        """Open a commit on `branch` (or, without one, a commit with `parent`, a ref in the same
        repo or a commit record, as its parent)."""
        parent_id = refs.commit(parent)[1] if parent is not None and not isinstance(parent, str) else parent
        prov = [CommitRef(*refs.commit(p)) for p in provenance] or None
        return self._api.start_commit(repo_name, branch, parent_id, description, prov)

    def finish_commit(self, commit: CommitArg, description: str | None = None) -> Commit:
        return self._api.finish_commit(*refs.commit(commit), description)

    def inspect_commit(self, commit: CommitArg) -> Commit:
        return self._api.inspect_commit(*refs.commit(commit))

    def list_commit(
        self, repo_name: str, to_commit: str | None = None, from_commit: str | None = None, number: int | None = None
    ) -> Iterator[Commit]:
        """Commits of `repo_name` newest first: the ancestry of `to_commit` (a branch or commit),
        back to but not including `from_commit`, at most `number`."""
        return iter(self._api.list_commit(repo_name, to_commit, number, from_commit))

    def delete_commit(self, commit: CommitArg) -> list[CommitRef]:
        """Delete a commit and the commits downstream of it; returns every commit deleted."""
        return self._api.delete_commit(*refs.commit(commit))

    def subscribe_commit(
        self, repo_name: str, branch: str, from_commit_id: str | None = None, new_only: bool = False
    ) -> Iterator[Commit]:
        """Finished commits on `branch`, oldest first, then each new one as it is finished
        (blocks; close the iterator to stop)."""
        return self._api.subscribe_commit(repo_name, branch, from_commit_id, new_only)

    @contextlib.contextmanager
    def commit(
        self, repo_name: str, branch: str | None = None, parent: str | HasCommit | None = None, description: str = ""
    ) -> Iterator[CommitContext]:
        """`with client.commit("images", "master") as c:` opens a commit, finishes it when the
        block succeeds and deletes it (nothing lands) when the block raises."""
        opened = self.start_commit(repo_name, branch, parent, description)
        ctx = CommitContext(self, opened)
        try:
            yield ctx
        except BaseException:
            self._api.delete_commit(opened.repo, opened.id)
            raise
        ctx.finished = self._api.finish_commit(opened.repo, opened.id)

    # -- branches -----------------------------------------------------------------------------

    def create_branch(
        self,
        repo_name: str,
        branch_name: str,
        commit: str | None = None,
        provenance: Iterable[str | tuple[str, str] | BranchRef] = (),
    ) -> Branch:
        """Point `branch_name` at `commit` (a commit id or branch); `provenance` names branches
        as `"repo@branch"` or `(repo, branch)`."""
        prov = [p if isinstance(p, BranchRef) else BranchRef(*refs.commit(p)) for p in provenance] or None
        return self._api.create_branch(repo_name, branch_name, commit, prov)

    def inspect_branch(self, repo_name: str, branch_name: str) -> Branch:
        return self._api.inspect_branch(repo_name, branch_name)

    def list_branch(self, repo_name: str) -> list[Branch]:
        return self._api.list_branch(repo_name)

    def delete_branch(self, repo_name: str, branch_name: str, force: bool = False) -> None:
        self._api.delete_branch(repo_name, branch_name, force)

    # -- writing files ------------------------------------------------------------------------

    def write(self, commit: CommitArg, ops: Iterable[WriteOp]) -> WriteResult:
        """Apply `ops` (`pfsfuse.sdk.Put`, `Copy`, `Delete`...) together: all land or none. Into
        a branch, that is its open commit, or one new commit."""
        return self._api.write_files(*refs.commit(commit), ops)

    def put_file_bytes(self, commit: CommitArg, path: str, value: Body, append: bool = False) -> WriteResult:
        """Write `value` (bytes, a binary file, or an iterable of bytes) to `path`."""
        return self.write(commit, [Put(refs.file(commit, path)[2], stream=_stream(value), append=append)])

    def put_file_url(self, commit: CommitArg, path: str, url: str, append: bool = False) -> WriteResult:
        """Write the body of `url` (http or https; the daemon fetches it) to `path`."""
        return self.write(commit, [Put(refs.file(commit, path)[2], url=url, append=append)])

    def delete_file(self, commit: CommitArg, path: str) -> WriteResult:
        return self.write(commit, [Delete(refs.file(commit, path)[2])])

    def copy_file(
        self, source_commit: CommitArg, source_path: str, dest_commit: CommitArg, dest_path: str, overwrite: bool = True
    ) -> WriteResult:
        """Copy a file or directory by reference: no data is copied."""
        src_repo, src_ref, src_path = refs.file(source_commit, source_path)
        return self.write(
            dest_commit, [Copy(refs.file(dest_commit, dest_path)[2], src_repo, src_ref, src_path, overwrite=overwrite)]
        )

    # -- reading files ------------------------------------------------------------------------

    def get_file(
        self, commit: CommitArg | FileArg, path: str | None = None, offset: int = 0, length: int | None = None
    ) -> io.BufferedReader:
        """A file's bytes (from `offset`, at most `length`) as a binary stream; a glob pattern
        gives its files one after the other. Close it (or use `with`) when done early."""
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument("offset and length must not be negative")
        return reader(self._api.get_file(*refs.file(commit, path), offset, length))

    def inspect_file(self, commit: CommitArg | FileArg, path: str | None = None) -> FileInfo:
        return self._api.inspect_file(*refs.file(commit, path))

    def list_file(self, commit: CommitArg | FileArg, path: str | None = None, history: int = 0) -> Iterator[FileInfo]:
        """The entries of a directory in name order, fetched a page at a time. With `history`
        N (-1: all), each entry is followed by up to N-1 earlier versions."""
        repo, ref, p = refs.file(commit, path)
        if history:
            yield from self._api.list_file(repo, ref, p, history=history)
            return
        after = None
        while True:
            page = self._api.list_file(repo, ref, p, start_after=after, limit=_PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].path.rpartition("/")[2]

    def walk_file(self, commit: CommitArg | FileArg, path: str | None = None) -> Iterator[FileInfo]:
        """`path` and everything under it, in pre-order."""
        return iter(self._api.walk_file(*refs.file(commit, path)))

    def glob_file(self, commit: CommitArg | FileArg, pattern: str | None = None) -> Iterator[FileInfo]:
        return iter(self._api.glob_file(*refs.file(commit, pattern)))

    def diff_file(
        self,
        new_commit: CommitArg,
        new_path: str = "",
        old_commit: CommitArg | None = None,
        old_path: str | None = None,
        shallow: bool = False,
    ) -> DiffResult:
        """What changed between two versions of a path: by default, `new_commit`'s parent."""
        new_repo, new_ref, new_p = refs.file(new_commit, new_path)
        old_repo = old_ref = None
        if old_commit is not None:
            old_repo, old_ref = refs.commit(old_commit)
        return self._api.diff_file(
            new_repo,
            new_ref,
            new_p,
            old_repo,
            old_ref,
            None if old_path is None else refs.file(new_commit, old_path)[2],
            shallow,
        )

    # -- pipelines ----------------------------------------------------------------------------

    @property
    def pipelines(self) -> RemotePipelines:
        """The daemon's pipeline API (`pfsfuse.scheduler.api.Pipelines`)."""
        if self._pipelines is None:
            from pfsfuse.scheduler.api import RemotePipelines

            self._pipelines = RemotePipelines(self.address)
        return self._pipelines

    def create_pipeline(
        self, spec: Mapping[str, Any] | str | bytes | Any, update: bool = False, reprocess: bool = False
    ):
        """Create (or with `update`, replace) a pipeline from its spec: a dict in Pachyderm's
        JSON layout, JSON or YAML text, or a `PipelineSpec`."""
        from pfsfuse.scheduler import spec as specs

        if isinstance(spec, (str, bytes)):
            parsed = specs.parse(spec)
        elif isinstance(spec, Mapping):
            try:
                parsed = specs.validate(msgspec.convert(dict(spec), specs.PipelineSpec))
            except msgspec.ValidationError as e:
                raise InvalidArgument(f"pipeline spec: {e}") from None
        elif isinstance(spec, specs.PipelineSpec):
            parsed = specs.validate(spec)
        else:
            raise InvalidArgument(
                f"a pipeline spec is a dict, JSON/YAML text or a PipelineSpec, not {type(spec).__name__}"
            )
        return self.pipelines.create_pipeline(parsed, update, reprocess)

    def inspect_pipeline(self, pipeline_name: str):
        return self.pipelines.inspect_pipeline(pipeline_name)

    def list_pipeline(self) -> list:
        return self.pipelines.list_pipeline()

    def delete_pipeline(self, pipeline_name: str, force: bool = False) -> None:
        self.pipelines.delete_pipeline(pipeline_name, force)

    def start_pipeline(self, pipeline_name: str):
        return self.pipelines.start_pipeline(pipeline_name)

    def stop_pipeline(self, pipeline_name: str):
        return self.pipelines.stop_pipeline(pipeline_name)

    def list_job(self, pipeline_name: str | None = None, input_commit: CommitArg | None = None) -> Iterator:
        ref = CommitRef(*refs.commit(input_commit)) if input_commit is not None else None
        return iter(self.pipelines.list_job(pipeline_name, ref))

    def inspect_job(self, job_id: str, block_state: bool = False):
        """A job; with `block_state`, once it has finished."""
        return self.pipelines.inspect_job(job_id, block_state)

    def stop_job(self, job_id: str):
        return self.pipelines.stop_job(job_id)

    def delete_job(self, job_id: str) -> None:
        self.pipelines.delete_job(job_id)

    def flush_commit(self, commits: Iterable[CommitArg], repos: Iterable[str] | None = None) -> Iterator[Commit]:
        """Wait until every commit downstream of `commits` has finished; yields them."""
        refs_ = [CommitRef(*self._commit_id(c)) for c in commits]
        return iter(self.pipelines.flush_commit(refs_, list(repos) if repos is not None else None))

    def flush_job(self, commits: Iterable[CommitArg], pipeline_names: Iterable[str] | None = None) -> Iterator:
        refs_ = [CommitRef(*self._commit_id(c)) for c in commits]
        return iter(self.pipelines.flush_job(refs_, list(pipeline_names) if pipeline_names is not None else None))

    def list_datum(self, job_id: str) -> Iterator:
        return iter(self.pipelines.list_datum(job_id))

    def inspect_datum(self, job_id: str, datum_id: str):
        return self.pipelines.inspect_datum(job_id, datum_id)

    def restart_datum(self, job_id: str, datum_id: str):
        return self.pipelines.restart_datum(job_id, datum_id)

    def get_logs(
        self, pipeline_name: str | None = None, job_id: str | None = None, datum_id: str | None = None
    ) -> Iterator:
        """Log lines of a pipeline, job or datum (`LogLine`: pipeline, job, datum, ts, message)."""
        return iter(self.pipelines.get_logs(pipeline_name, job_id, datum_id))

    def _commit_id(self, commit: CommitArg) -> tuple[str, str]:
        """(repo, commit id) of any commit reference (the pipeline API takes ids only)."""
        repo, ref = refs.commit(commit)
        return repo, self._api.inspect_commit(repo, ref).id


class CommitContext:
    """An open commit, from `Client.commit()`: its verbs write into it."""

    def __init__(self, client: Client, commit: Commit):
        self.client = client
        self.repo = commit.repo
        self.id = commit.id
        self.started = commit
        self.finished: Commit | None = None  # set once the `with` block has finished it

    def __repr__(self) -> str:
        return f"CommitContext({self.repo}@{self.id})"

    def put_file_bytes(self, path: str, value: Body, append: bool = False) -> WriteResult:
        return self.client.put_file_bytes(self, path, value, append)

    def put_file_url(self, path: str, url: str, append: bool = False) -> WriteResult:
        return self.client.put_file_url(self, path, url, append)

    def delete_file(self, path: str) -> WriteResult:
        return self.client.delete_file(self, path)

    def copy_file(self, source: CommitArg | FileArg, dest_path: str, overwrite: bool = True) -> WriteResult:
        repo, ref, path = refs.file(source)
        return self.client.copy_file((repo, ref), path, self, dest_path, overwrite)

    def write(self, ops: Iterable[WriteOp]) -> WriteResult:
        return self.client.write(self, ops)

    def get_file(self, path: str, offset: int = 0, length: int | None = None) -> io.BufferedReader:
        return self.client.get_file(self, path, offset, length)
