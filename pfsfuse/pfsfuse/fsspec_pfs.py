"""`pfs://REPO@REF/PATH` for fsspec (pandas, pyarrow, DuckDB, dask), over the public SDK.

REF is any ref: a branch, a commit id, `master^2`. Reads are pinned to the commit the ref named
when the read began, and read file data straight from the object store (verified chunk by chunk)
where this process may. Listings are cached by commit id: forever for finished commits, so a
branch's listing is fresh as soon as its head moves. Writes go only into branches (a commit id or
`master^2` is read-only: PermissionError with EROFS), each call one commit; `with fs.transaction:`
makes everything written in the block one commit per branch, deleted if the block fails.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import threading
from collections.abc import Iterator
from typing import IO

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.transaction import Transaction

from pfsfuse.api.types import Copy, Delete, FileInfo, Mkdir, Put, ReadPlan
from pfsfuse.metadata import glob as pfs_glob
from pfsfuse.metadata import refs as ref_syntax
from pfsfuse.metadata.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PfsError,
)
from pfsfuse.sdk import Client

_URL = re.compile(r"(?P<repo>[A-Za-z0-9_-]{1,63})@(?P<ref>[^/]+)(?:/(?P<path>.*))?", re.S)


@contextlib.contextmanager
def _as_oserror(path: str) -> Iterator[None]:
    """The SDK's errors in Python's file conventions."""
    try:
        yield
    except NotFound as e:
        raise FileNotFoundError(errno.ENOENT, str(e), path) from None
    except AlreadyExists as e:
        raise FileExistsError(errno.EEXIST, str(e), path) from None
    except FailedPrecondition as e:
        raise PermissionError(errno.EROFS, str(e), path) from None
    except InvalidArgument as e:
        raise ValueError(f"{path}: {e}") from None
    except PfsError as e:
        raise OSError(errno.EIO, str(e), path) from None


class PfsTransaction(Transaction):
    """One open commit per branch written in the block: finished together when it succeeds,
    deleted when it fails."""

    def start(self) -> None:
        self.fs._open_commits = {}
        super().start()

    def complete(self, commit: bool = True) -> None:
        fs, landed = self.fs, False
        try:
            super().complete(commit)  # files opened for writing upload into the open commits
            landed = commit
        finally:
            opened, fs._open_commits = fs._open_commits, {}
            for (repo, _branch), commit_id in opened.items():
                if landed:
                    fs.client.finish_commit((repo, commit_id))
                else:
                    fs.client.delete_commit((repo, commit_id))


class PfsFileSystem(AbstractFileSystem):
    """fsspec file system for `pfs://REPO@REF/PATH`.

    `PfsFileSystem()` reaches the daemon as `pfsfuse.Client()` does (PFS_ADDRESS, else
    PFS_HOME's); `address=` names one; `client=` reuses an SDK client.
    """

    protocol = "pfs"
    root_marker = ""
    transaction_type = PfsTransaction
    cachable = True

    def __init__(self, address: str | None = None, client: Client | None = None, **kwargs):
        super().__init__(**kwargs)
        self.client = client if client is not None else Client(address)
        self._open_commits: dict[tuple[str, str], str] = {}
        self._finished: set[tuple[str, str]] = set()  # (repo, commit id) of finished commits
        self._listings: dict[tuple[str, str, str], list[dict]] = {}  # by finished commit id
        self._lock = threading.Lock()

    # -- paths ----------------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("pfs://"):
            path = path[len("pfs://") :]
        return path.strip("/")

    def _split(self, path: str) -> tuple[str, str, str]:
        """(repo, ref, path in the commit) of a URL or a stripped path; ValueError if malformed."""
        stripped = self._strip_protocol(path)
        m = _URL.fullmatch(stripped)
        if m is None:
            raise ValueError(f"pfs://{stripped}: expected pfs://REPO@REF/PATH (REF a branch, commit id or master^2)")
        with _as_oserror(path):
            ref_syntax.parse(m["ref"])
        return m["repo"], m["ref"], (m["path"] or "").strip("/")

    def _commit(self, repo: str, ref: str) -> tuple[str, bool]:
        """The commit id `ref` names now, and whether that commit is finished (immutable)."""
        if ref_syntax.is_commit_id(ref) and (repo, ref) in self._finished:
            return ref, True
        with _as_oserror(f"{repo}@{ref}"):
            c = self.client.inspect_commit((repo, ref))
        if c.finished is not None:
            self._finished.add((repo, c.id))
        return c.id, c.finished is not None

    def _branch(self, repo: str, ref: str, path: str) -> str:
        """Where a write to `ref` goes: the transaction's open commit, else the branch itself.
        Only branches take writes."""
        if ref_syntax.is_commit_id(ref) or ref_syntax.parse(ref)[1]:
            raise PermissionError(errno.EROFS, f"{repo}@{ref} is a commit: only branches can be written", path)
        if not self._intrans:
            return ref
        with self._lock:
            if (repo, ref) not in self._open_commits:
                with _as_oserror(path):
                    self._open_commits[(repo, ref)] = self.client.start_commit(repo, ref).id
            return self._open_commits[(repo, ref)]

    def _entry(self, repo: str, ref: str, info: FileInfo, commit: str) -> dict:
        name = f"{repo}@{ref}/{info.path}" if info.path else f"{repo}@{ref}"
        out = {
            "name": name,
            "size": info.size,
            "type": "directory" if info.type == "dir" else "file",
            "hash": info.hash,
            "commit": commit,
        }
        if info.type == "symlink":
            out["islink"], out["destination"] = True, info.target
        return out

    def invalidate_cache(self, path: str | None = None) -> None:
        """Nothing to drop: listings are kept only for finished commits, which never change, and
        a branch is resolved to its head at each call."""

    # -- reading --------------------------------------------------------------------------------

    def ls(self, path, detail=True, **kwargs):
        stripped = self._strip_protocol(path)
        if stripped == "":
            return self._ls_root(detail)
        repo, ref, sub = self._split(stripped)
        commit, finished = self._commit(repo, ref)
        key = (repo, commit, sub)
        entries = self._listings.get(key)
        if entries is None:
            with _as_oserror(path):
                infos = list(self.client.list_file((repo, commit), sub))
                if not infos and sub:  # an empty directory lists nothing; a file lists itself
                    info = self.client.inspect_file((repo, commit), sub)
                    if info.type != "dir":
                        infos = [info]
            entries = [self._entry(repo, ref, i, commit) for i in infos]
            if finished:
                self._listings[key] = entries
        return entries if detail else [e["name"] for e in entries]

    def _ls_root(self, detail: bool):
        out = []
        for repo in self.client.list_repo():
            for branch in repo.branches:
                out.append({"name": f"{repo.name}@{branch}", "size": 0, "type": "directory"})
        return out if detail else [e["name"] for e in out]

    def info(self, path, **kwargs):
        repo, ref, sub = self._split(path)
        commit, _ = self._commit(repo, ref)
        with _as_oserror(path):
            return self._entry(repo, ref, self.client.inspect_file((repo, commit), sub), commit)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        """Everything under `path` in one request (the daemon walks the tree)."""
        repo, ref, sub = self._split(path)
        commit, _ = self._commit(repo, ref)
        with _as_oserror(path):
            infos = list(self.client.walk_file((repo, commit), sub))
        base = sub.count("/") + 1 if sub else 0
        out = {}
        for info in infos:
            depth = info.path.count("/") + 1 - base if info.path else 0
            if maxdepth is not None and depth > maxdepth:
                continue
            if info.type == "dir" and (not withdirs or info.path == sub):
                continue
            entry = self._entry(repo, ref, info, commit)
            out[entry["name"]] = entry
        return out if detail else sorted(out)

    def cat_file(self, path, start=None, end=None, **kwargs):
        repo, ref, sub = self._split(path)
        commit, _ = self._commit(repo, ref)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = max(0, size + start) if start is not None and start < 0 else start
            end = max(0, size + end) if end is not None and end < 0 else end
        offset = start or 0
        length = None if end is None else max(0, end - offset)
        with _as_oserror(path), self.client.get_file((repo, commit), sub, offset, length) as f:
            return f.read()

    def modified(self, path):
        """When the commit the ref names was finished (started, if open): a changed branch head
        changes it, so caches keyed on it (DuckDB's) notice."""
        import datetime

        repo, ref, _ = self._split(path)
        with _as_oserror(path):
            c = self.client.inspect_commit((repo, ref))
        return datetime.datetime.fromtimestamp(c.finished or c.started, datetime.UTC)

    def checksum(self, path) -> int:
        """The content hash (equal for equal contents, in any repo or commit)."""
        return int(self.info(path)["hash"], 16)

    def ukey(self, path) -> str:
        return self.info(path)["hash"]

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        repo, ref, sub = self._split(path)
        if "r" in mode and pfs_glob.is_pattern(sub):
            # As Pachyderm's get-file: the matching files in path order, each directory's header
            # and footer once around its files (a split CSV reads as one table).
            commit, _ = self._commit(repo, ref)
            with _as_oserror(path):
                return self.client.get_file((repo, commit), sub)
        if "x" in mode:  # exclusive creation (checked here; the put itself overwrites)
            if self.exists(path):
                raise FileExistsError(errno.EEXIST, "file exists", path)
            mode = mode.replace("x", "w")
        return PfsFile(self, path, mode, block_size or "default", autocommit, cache_options=cache_options, **kwargs)

    # -- writing --------------------------------------------------------------------------------

    def _write(self, path: str, ops_for) -> None:
        """Apply the ops `ops_for(sub)` makes to the branch of `path`, atomically."""
        repo, ref, sub = self._split(path)
        target = self._branch(repo, ref, path)
        with _as_oserror(path):
            self.client.write((repo, target), ops_for(sub))

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        if mode == "create" and self.exists(path):
            raise FileExistsError(errno.EEXIST, "file exists", path)
        self._write(path, lambda sub: [Put(sub, stream=io.BytesIO(value))])

    def pipe(self, path, value=None, **kwargs):
        """Write one file, or a {path: bytes} dict as one commit per branch."""
        if self._intrans or not isinstance(path, dict):
            return super().pipe(path, value, **kwargs)
        with self.transaction:
            return super().pipe(path, value, **kwargs)

    def put_file(self, lpath, rpath, callback=None, **kwargs):
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        self._write(rpath, lambda sub: [Put(sub, local=lpath)])

    def put(self, lpath, rpath, recursive=False, **kwargs):
        """Upload as one commit per branch (a failure leaves nothing)."""
        if self._intrans:
            return super().put(lpath, rpath, recursive=recursive, **kwargs)
        with self.transaction:
            return super().put(lpath, rpath, recursive=recursive, **kwargs)

    def cp_file(self, path1, path2, **kwargs):
        """A copy by reference: no data moves."""
        src_repo, src_ref, src = self._split(path1)
        commit, _ = self._commit(src_repo, src_ref)
        self._write(path2, lambda sub: [Copy(sub, src_repo, commit, src)])

    def copy(self, path1, path2, recursive=False, **kwargs):
        if self._intrans:
            return super().copy(path1, path2, recursive=recursive, **kwargs)
        with self.transaction:
            return super().copy(path1, path2, recursive=recursive, **kwargs)

    def rm_file(self, path):
        self._write(path, lambda sub: [Delete(sub)])

    def rm(self, path, recursive=False, maxdepth=None):
        """Delete files (directories with `recursive`) in one commit per branch."""
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        by_branch: dict[tuple[str, str], list[str]] = {}
        for p in paths:
            repo, ref, sub = self._split(p)
            if not sub:
                raise PermissionError(errno.EPERM, "the root of a commit cannot be deleted", p)
            by_branch.setdefault((repo, ref), []).append(sub)
        for (repo, ref), subs in by_branch.items():
            # A directory deleted takes what is under it: skip paths inside one already listed.
            subs = sorted(set(subs))
            tops = [s for s in subs if not any(s.startswith(t + "/") for t in subs if t != s)]
            self._write(f"{repo}@{ref}", lambda _, tops=tops: [Delete(s, missing_ok=True) for s in tops])

    def mkdir(self, path, create_parents=True, **kwargs):
        if not create_parents and not self.exists(self._parent(path)):
            raise FileNotFoundError(errno.ENOENT, "no parent directory", path)
        self._write(path, lambda sub: [Mkdir(sub)])

    def makedirs(self, path, exist_ok=False):
        if not exist_ok and self.exists(path):
            raise FileExistsError(errno.EEXIST, "exists", path)
        self._write(path, lambda sub: [Mkdir(sub)] if sub else [])

    def rmdir(self, path):
        if self.ls(path, detail=False):
            raise OSError(errno.ENOTEMPTY, "directory not empty", path)
        self.rm_file(path)


class PfsFile(AbstractBufferedFile):
    """A file of a commit, read in ranges with read-ahead (pinned to the commit it was opened
    at); or a file being written, uploaded as one put when closed."""

    def __init__(
        self,
        fs: PfsFileSystem,
        path,
        mode="rb",
        block_size="default",
        autocommit=True,
        # No block cache by default: sequential reads continue one stream, which reads ahead
        # itself, and a cache's copies halved the rate of big reads.
        cache_type="none",
        cache_options=None,
        **kwargs,
    ):
        self._pinned: tuple[str, str, str] | None = None
        self._plan: ReadPlan | None = None  # the pinned file's chunks, fetched once
        # A sequential reader's ranges come from one stream to the end of the file, so that
        # fetching the next chunks overlaps with verifying these (as get-file does).
        self._stream: Iterator[bytes] | None = None
        self._stream_at = 0  # the offset of the stream's next byte
        self._rest: bytes | memoryview = b""  # of the stream's last piece, not taken yet
        if "r" in mode:
            repo, ref, sub = fs._split(path)
            info = fs.info(path)
            if info["type"] == "directory":
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            self._pinned = (repo, info["commit"], sub)
            kwargs["size"] = info["size"]
        super().__init__(
            fs, path, mode, block_size, autocommit, cache_type=cache_type, cache_options=cache_options, **kwargs
        )
        self._spool: IO[bytes] | None = None

    def _fetch_range(self, start: int, end: int) -> bytes:
        assert self._pinned is not None  # set when opened for reading
        repo, commit, sub = self._pinned
        api = self.fs.client.api
        with _as_oserror(self.path):
            if self._plan is None:
                self._plan = api.read_plan(repo, commit, sub)
            if self._stream is None or self._stream_at != start:
                self._end_stream()
                self._stream, self._stream_at = iter(api.plan_bytes(repo, commit, self._plan, start)), start
            # Pieces joined once: each fresh buffer costs page faults, which a VM makes dear.
            need = end - start
            parts: list = [self._rest] if self._rest else []
            have = len(self._rest)
            while have < need and (piece := next(self._stream, b"")):
                parts.append(piece)
                have += len(piece)
            self._rest = b""
            if have > need:
                last = memoryview(parts[-1])
                parts[-1], self._rest = last[: len(last) - (have - need)], last[len(last) - (have - need) :]
            data = b"".join(parts)
            self._stream_at = start + len(data)
            return data

    def _end_stream(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
        self._stream, self._rest = None, b""

    def close(self) -> None:
        self._end_stream()
        super().close()

    def _initiate_upload(self) -> None:
        import tempfile

        self.fs._split(self.path)  # a bad URL fails before anything is written
        self._spool = tempfile.TemporaryFile()

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._spool is not None  # made by _initiate_upload
        self._spool.write(self.buffer.getbuffer())
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Put the spooled bytes (at close, or when the transaction completes)."""
        spool, self._spool = self._spool, None
        if spool is None:  # nothing was ever flushed: an empty file
            spool = io.BytesIO()
        try:
            spool.seek(0)
            self.fs._write(self.path, lambda sub: [Put(sub, stream=spool)])
        finally:
            spool.close()

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
