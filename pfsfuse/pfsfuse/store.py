"""The file engine: the in-process implementation of the API over the index and the chunk store.

Writes stream data through the chunker into packs first (outside the index lock), record where new
chunks landed, and only then change the tree and the commit in one atomic batch, so a crash or an
error at any point leaves finished commits untouched and at worst some unreferenced chunks for the
garbage collector.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import msgspec

from pfsfuse import dump, fsck, gc, ingress, split
from pfsfuse.api.client import Client
from pfsfuse.api.types import (
    Chmod,
    Copy,
    Delete,
    DiffResult,
    FileInfo,
    GcResult,
    Mkdir,
    Put,
    ReadPlan,
    RepoInfo,
    RestoreResult,
    Symlink,
    WriteOp,
    WriteResult,
)
from pfsfuse.chunks import ChunkLoc, ChunkStore, CorruptChunk, ObjectNotFound, StorageError, open_store
from pfsfuse.home import Home
from pfsfuse.version import VERSION
from pfsfuse.metadata import glob, names, tree
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NoSpace,
    NotFound,
    Unavailable,
)
from pfsfuse.metadata.index import Index, View
from pfsfuse.metadata.records import (
    EMPTY_DIR,
    Branch,
    BranchRef,
    ChunkRef,
    Commit,
    CommitRef,
    DirNode,
    FileNode,
    Node,
    SymlinkNode,
)

_LOC = msgspec.msgpack.Decoder(ChunkLoc)
_LOC_ENC = msgspec.msgpack.Encoder()
_RECORD = re.compile(r"[0-9a-f]{16}")  # the name of a split file's record
_LAST_RECORD = "f" * 16
_RECORD_NAME = len(_LAST_RECORD)  # bytes a record's name adds below its split file's path
_MAX_FRAME = 64 << 20  # headers and footers are read whole
_READ_BATCH = 1024  # chunks located at a time when reading many files


def file_info(path: str, node: Node) -> FileInfo:
    if isinstance(node, DirNode):
        return FileInfo(
            path, "dir", node.size, node.root.hex() if node.root else "", children=node.count
        )
    if isinstance(node, SymlinkNode):
        return FileInfo(path, "symlink", node.size, target=node.target)
    return FileInfo(path, "file", node.size, node.hash.hex(), executable=node.executable)


class Store(Client):
    """The store in a PFS_HOME: owns the RocksDB index, so one process at a time opens it."""

    def __init__(self, home: Home, storage: str | None = None):
        home.ensure()
        self.home = home
        self.config = home.create_config(storage)
        self.objects = open_store(self.config.storage)
        self.chunks = ChunkStore(self.objects, self.config.seed)
        self.db = DB(str(home.index), self.config.seed)
        self.index = Index(self.db)
        # Bumped and notified whenever a commit finishes or a branch moves (subscribe-commit).
        self.changed = threading.Condition()
        self.generation = 0
        self.guard = gc.Guard()  # the chunks writes refer to, for garbage collection
        self.exclusive = threading.Lock()  # held by a garbage collection, extract or restore

    def close(self) -> None:
        self.chunks.reader.close()
        self.db.close()
        self.objects.close()

    def wait_changed(self, generation: int, timeout: float) -> int:
        """Block until the store changed after `generation` (or `timeout` passed); the current
        generation."""
        with self.changed:
            self.changed.wait_for(lambda: self.generation != generation, timeout=timeout)
            return self.generation

    def _notify(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def version(self) -> str:
        return VERSION

    # -- repos --------------------------------------------------------------------------------

    def _repo_info(self, name: str) -> RepoInfo:
        repo = self.index.repo(name)
        branches = self.index.branches(name)
        master = next((b for b in branches if b.name == "master"), None)
        size = self.index.commit(name, master.head).size if master and master.head else 0
        return RepoInfo(repo.name, repo.created, repo.description, size, [b.name for b in branches])

    def create_repo(self, name: str, description: str = "", update: bool = False) -> RepoInfo:
        self.index.create_repo(name, description, update)
        return self._repo_info(name)

    def inspect_repo(self, name: str) -> RepoInfo:
        return self._repo_info(name)

    def list_repo(self) -> list[RepoInfo]:
        return [self._repo_info(r.name) for r in self.index.repos()]

    def delete_repo(self, name: str, force: bool = False) -> None:
        self.index.delete_repo(name, force)
        self._notify()

    # -- commits ------------------------------------------------------------------------------

    def start_commit(
        self,
        repo: str,
        branch: str | None = None,
        parent: str | None = None,
        description: str = "",
        provenance: list[CommitRef] | None = None,
    ) -> Commit:
        c = self.index.start_commit(repo, branch, parent, description, provenance or ())
        self._notify()
        return c

    def finish_commit(self, repo: str, ref: str, description: str | None = None) -> Commit:
        c = self.index.finish_commit(repo, ref, description)
        self._notify()
        return c

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return self.index.resolve(repo, ref)

    def list_commit(
        self, repo: str, ref: str | None = None, number: int | None = None, since: str | None = None
    ) -> list[Commit]:
        stop = self.index.resolve(repo, since).id if since else None
        if ref is None:
            found = self.index.commits(repo)
            self.index.repo(repo)
        else:
            found = self._ancestry(repo, self.index.resolve(repo, ref))
        out = []
        for c in found:
            if c.id == stop or (number is not None and len(out) >= number):
                break
            out.append(c)
        return out

    def _ancestry(self, repo: str, c: Commit | None) -> Iterator[Commit]:
        while c is not None:
            yield c
            c = self.index.commit(repo, c.parent) if c.parent else None

    def delete_commit(self, repo: str, ref: str) -> list[CommitRef]:
        deleted = self.index.delete_commit(repo, ref)
        self._notify()
        return deleted

    def subscribe_commit(
        self, repo: str, branch: str, since: str | None = None, new_only: bool = False
    ) -> Iterator[Commit]:
        return self.subscribe(repo, branch, since, new_only, threading.Event())

    def subscribe(
        self, repo: str, branch: str, since: str | None, new_only: bool, cancel: threading.Event
    ) -> Iterator[Commit]:
        """subscribe_commit that stops within a second of `cancel` being set."""
        self.index.repo(repo)
        names.branch_name(branch)
        seen: set[str] = set()
        if since:
            seen.update(c.id for c in self._ancestry(repo, self.index.resolve(repo, since)))
        if new_only:
            seen.update(c.id for c in self._finished_on(repo, branch, seen))
        return self._follow(repo, branch, seen, cancel)

    def _follow(
        self, repo: str, branch: str, seen: set[str], cancel: threading.Event
    ) -> Iterator[Commit]:
        while not cancel.is_set():
            with self.changed:
                generation = self.generation
            for c in reversed(list(self._finished_on(repo, branch, seen))):
                seen.add(c.id)
                yield c
            with self.changed:
                self.changed.wait_for(
                    lambda: self.generation != generation or cancel.is_set(), timeout=1.0
                )

    def _finished_on(self, repo: str, branch: str, seen: set[str]) -> Iterator[Commit]:
        """Finished commits from the branch head back to the first already seen one."""
        b = self.index.branch(repo, branch)
        if b is None or b.head is None:
            return
        for c in self._ancestry(repo, self.index.commit(repo, b.head)):
            if c.id in seen:
                return
            if c.finished is not None:
                yield c

    # -- branches -----------------------------------------------------------------------------

    def create_branch(
        self,
        repo: str,
        name: str,
        head: str | None = None,
        provenance: list[BranchRef] | None = None,
    ) -> Branch:
        b = self.index.create_branch(repo, name, head, provenance)
        self._notify()
        return b

    def inspect_branch(self, repo: str, name: str) -> Branch:
        self.index.repo(repo)
        b = self.index.branch(repo, names.branch_name(name))
        if b is None:
            raise NotFound(f"branch {name} not found in repo {repo}")
        return b

    def list_branch(self, repo: str) -> list[Branch]:
        self.index.repo(repo)
        return self.index.branches(repo)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        self.index.delete_branch(repo, name, force)
        self._notify()

    # -- writing files ------------------------------------------------------------------------

    def _check_writable(self, repo: str, ref: str) -> None:
        """Fail fast, before any data is read, when `ref` cannot take writes."""
        self.index.repo(repo)
        b = self._branch_of(repo, ref)
        if b is None:
            c = self.index.resolve(repo, ref)
            if c.finished is not None:
                raise FailedPrecondition(
                    f"commit {c.id} in repo {repo} is finished; write to a branch or an open commit"
                )

    def _branch_of(self, repo: str, ref: str) -> Branch | None:
        """The branch a write to `ref` goes through, or None when ref names a commit."""
        if ref and "^" not in ref and "~" not in ref and not names.COMMIT_ID.fullmatch(ref):
            names.branch_name(ref)
            return self.index.branch(repo, ref) or Branch(repo, ref)
        return None

    @contextlib.contextmanager
    def _writing(self, repo: str, ref: str) -> Iterator[_Write]:
        """The commit a write lands in, inside one atomic mutation.

        A branch whose head is open takes the write into that commit; any other branch (even a
        new one) gets a new commit on top of its head, finished when the write completes, as
        put-file does in Pachyderm.
        """
        started = time.time()
        with self.index.mutation() as v:
            b = self._branch_of(repo, ref)
            auto = False
            if b is not None:
                b = v.branch(repo, b.name) or b
                head = v.commit(repo, b.head) if b.head else None
                if head is not None and head.finished is None:
                    target = head
                else:
                    target = self.index.new_commit(v, repo, b.name, head, started=started)
                    auto = True
            else:
                target = self.index.resolve(repo, ref, v)
                if target.finished is not None:
                    raise FailedPrecondition(
                        f"commit {target.id} in repo {repo} is finished; "
                        "write to a branch or an open commit"
                    )
            w = _Write(self.index, v, target)
            yield w
            if auto:
                w.commit = msgspec.structs.replace(w.commit, finished=time.time())
                v.put_commit(w.commit)
        self._notify()

    def write_files(self, repo: str, ref: str, ops: Iterable[WriteOp]) -> WriteResult:
        self._check_writable(repo, ref)
        writer = self.chunks.writer()
        staged: list[tuple[WriteOp, _Staged | None]] = []
        files = total = 0
        # Claims keep the chunks the write refers to alive until its commit change is durable.
        with self.guard.write() as claims:
            try:
                for op in ingress.expand(ops):
                    op = _checked(op)
                    data = None
                    if isinstance(op, Put):
                        with self._open_source(op) as stream:
                            data = self._stage(op, stream, writer, claims)
                        files += 1
                        total += data.size
                    staged.append((op, data))
                self._record(writer.flush())
            except OSError as e:
                writer.abort()
                if e.errno == errno.ENOSPC:
                    raise NoSpace(f"no space left on device while storing chunks: {e}") from None
                raise
            except StorageError as e:
                writer.abort()
                raise Unavailable(f"cannot store chunks: {e}") from None
            except BaseException:
                writer.abort()
                raise
            with self._writing(repo, ref) as w:
                batch = _Batch(self, w)
                for op, data in staged:
                    batch.apply(op, data)
                w.set_tree(batch.finish())
        return WriteResult(w.commit.id, files, total, writer.bytes_stored)

    def _stage(self, op: Put, stream, writer, claims: set[bytes]) -> _Staged:
        """Store a Put's data as chunks, before the commit changes."""
        if op.split is not None:
            splitter = split.Splitter(stream, op.split, op.target_datums, op.target_bytes)
            records = [self._store_buf(r, writer, claims) for r in splitter]
            frame = [
                None if part is None else self._store_buf(part, writer, claims)
                for part in (splitter.header, splitter.footer)
            ]
            return _Staged(records=records, header=frame[0], footer=frame[1])
        if op.frame is not None:
            if op.frame not in ("header", "footer"):
                raise InvalidArgument(f"unknown frame {op.frame!r}: use header or footer")
            data = _read_up_to(stream, _MAX_FRAME + 1)
            if len(data) > _MAX_FRAME:
                raise InvalidArgument(f"a {op.frame} is limited to {_MAX_FRAME >> 20} MiB")
            # `echo "" | pfs put-header ...` removes it, as in the Pachyderm docs.
            empty = data in (b"", b"\n", b"\r\n")
            return _Staged(chunks=[] if empty else self._store_buf(data, writer, claims))
        if op.local is not None:  # a file we opened ourselves: read ahead while cutting
            pieces = self.chunks.chunker.cut_file(stream.fileno())
        else:
            pieces = self.chunks.chunker.cut(stream)
        return _Staged(chunks=self._store(pieces, writer, claims))

    def _store(self, pieces: Iterable, writer, claims: set[bytes]) -> list[ChunkRef]:
        """Store chunks into the pack writer; chunks the store already has are not written."""
        return [self._put_chunk(p, writer, claims) for p in pieces]

    def _store_buf(self, buf, writer, claims: set[bytes]) -> list[ChunkRef]:
        return self._store(self.chunks.chunker.cut_buf(buf), writer, claims)

    def _put_chunk(self, piece, writer, claims: set[bytes]) -> ChunkRef:
        h = self.chunks.hash(piece)
        if not self.guard.claim(claims, h, self._indexed):
            self._record(writer.add(h, piece))
        return ChunkRef(h, len(piece))

    def _indexed(self, h: bytes) -> bool:
        return self.index.chunk_location(h) is not None

    def _record(self, locations: list[tuple[bytes, ChunkLoc]]) -> None:
        """Index chunks that are now durable in the object store."""
        if locations:
            self.guard.indexing({loc.pack for _, loc in locations})
            self.index.put_chunk_locations((h, _LOC_ENC.encode(loc)) for h, loc in locations)

    @contextlib.contextmanager
    def _open_source(self, op: Put):
        if op.stream is not None:
            yield op.stream
        elif op.local is not None:
            try:
                f = open(op.local, "rb")
            except FileNotFoundError:
                raise NotFound(f"{op.local}: no such file") from None
            except IsADirectoryError:
                raise InvalidArgument(f"{op.local} is a directory; use -r") from None
            except PermissionError:
                raise InvalidArgument(f"{op.local}: permission denied") from None
            with f:
                yield f
        elif op.url is not None:
            with ingress.open_url(op.url) as stream:
                yield stream
        else:
            raise InvalidArgument(f"no data given for {op.path}")

    # -- reading files ------------------------------------------------------------------------

    def _node(self, repo: str, ref: str, path: str) -> Node:
        c = self.index.resolve(repo, ref)
        path = names.path(path)
        node = tree.lookup(self.db, c.tree, path) if path else c.tree
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        return node

    def _content(
        self, repo: str, ref: str, path: str
    ) -> tuple[FileInfo | None, Iterable[ChunkRef], int | None]:
        """What get-file of `path` reads: (the file or directory, its chunks, their size), or
        for a glob pattern (None, the chunks as they are found, None)."""
        c = self.index.resolve(repo, ref)
        path = names.path(path)
        where = f"{repo}@{ref}:{path or '/'}"
        parent, node = None, c.tree
        if path:
            parent_path, name = names.split(path)
            parent = tree.lookup(self.db, c.tree, parent_path) if parent_path else c.tree
            node = tree.child(self.db, parent, name) if isinstance(parent, DirNode) else None
        if node is None and glob.is_pattern(path):
            return None, self._glob_chunks(c.tree, path), None
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        if isinstance(node, SymlinkNode):
            raise InvalidArgument(f"{where} is a symlink to {node.target}")
        if isinstance(node, DirNode):
            if not node.framed:
                raise InvalidArgument(f"{where} is a directory; use -r")
            chunks = tree.framed_chunks(self.db, node)
        else:
            chunks = tree.framed_chunks(self.db, parent, tree.file_chunks(self.db, node))
        return file_info(path, node), chunks, sum(r.size for r in chunks)

    def _glob_chunks(self, root: DirNode, pattern: str) -> Iterator[ChunkRef]:
        """The chunks of the files matching `pattern`, in path order, with each directory's
        header before and footer after each run of its files."""
        group, parent = None, None
        for path, node in glob.glob(self.db, root, pattern):
            if not isinstance(node, FileNode):
                continue
            parent_path = names.split(path)[0]
            if parent_path != group:
                if parent is not None and parent.footer is not None:
                    yield from tree.file_chunks(self.db, parent.footer)
                group = parent_path
                parent = tree.lookup(self.db, root, parent_path) if parent_path else root
                if parent.header is not None:
                    yield from tree.file_chunks(self.db, parent.header)
            yield from tree.file_chunks(self.db, node)
        if parent is not None and parent.footer is not None:
            yield from tree.file_chunks(self.db, parent.footer)

    def location(self, h: bytes) -> ChunkLoc:
        data = self.index.chunk_location(h)
        if data is None:
            raise DataLoss(f"chunk {h.hex()} is referenced but not in the chunk index")
        return _LOC.decode(data)

    def read_chunk(self, ref: ChunkRef) -> bytes:
        return b"".join(self._read([ref]))

    def _read(self, refs, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Bytes [offset, offset + length) of the chunks `refs`."""
        located = [(r.hash, r.size, self.location(r.hash)) for r in refs]
        try:
            yield from self.chunks.reader.read_moving(located, self.chunk_locations, offset, length)
        except (ObjectNotFound, CorruptChunk) as e:
            raise DataLoss(str(e)) from None
        except StorageError as e:  # the object store failed past its retries
            raise Unavailable(str(e)) from None

    def _read_many(self, refs: Iterable[ChunkRef], offset: int, length: int | None) -> Iterator[bytes]:
        """`_read` over a stream of chunks, located a batch at a time."""
        end = None if length is None else offset + length
        pos = 0
        it = iter(refs)
        while batch := list(itertools.islice(it, _READ_BATCH)):
            size = sum(r.size for r in batch)
            lo, hi = max(offset - pos, 0), size if end is None else min(end - pos, size)
            if hi > lo:
                yield from self._read(batch, lo, hi - lo)
            pos += size
            if end is not None and pos >= end:
                return

    def read(
        self, repo: str, ref: str, path: str, offset: int = 0, length: int | None = None
    ) -> tuple[int | None, Iterator[bytes]]:
        """get_file, with the number of bytes it yields when known before reading (the server
        sends it as the content length)."""
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument("offset and length must not be negative")
        _, chunks, size = self._content(repo, ref, path)
        if size is not None:
            size = max(0, size - offset)
            if length is not None:
                size = min(size, length)
        return size, self._read_many(chunks, offset, length)

    def get_file(
        self, repo: str, ref: str, path: str, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        return self.read(repo, ref, path, offset, length)[1]

    def read_plan(self, repo: str, ref: str, path: str) -> ReadPlan:
        info, chunks, _ = self._content(repo, ref, path)
        if info is None:
            raise InvalidArgument(f"{path}: read plans are for files, not glob patterns")
        return ReadPlan(info, [(r, self.location(r.hash)) for r in chunks])

    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo:
        return file_info(names.path(path), self._node(repo, ref, path))

    def list_file(
        self,
        repo: str,
        ref: str,
        path: str = "",
        start_after: str | None = None,
        limit: int | None = None,
        history: int = 0,
    ) -> list[FileInfo]:
        if history < -1:
            raise InvalidArgument(f"history {history}: give a number of versions, or -1 for all")
        path = names.path(path)
        c = self.index.resolve(repo, ref)
        node = tree.lookup(self.db, c.tree, path) if path else c.tree
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        if not isinstance(node, DirNode):
            found = [(path, node)]
        else:
            entries = tree.list_dir(self.db, node, start_after)
            found = [(names.join(path, n), child) for n, child in itertools.islice(entries, limit)]
        if not history:
            return [file_info(p, n) for p, n in found]
        return self._history(repo, c, found, history)

    def _history(self, repo: str, c: Commit, found: list[tuple[str, Node]], limit: int) -> list[FileInfo]:
        """Each path's versions, newest first, back through the ancestors of `c` until the path
        is missing or `limit` versions are found (-1: no limit). A version is reported with the
        oldest commit in the run of commits that hold it, the one that wrote it."""
        versions = {p: [[n, c.id]] for p, n in found}
        active = set(versions)
        newer = c
        for older in self._ancestry(repo, self.index.commit(repo, c.parent) if c.parent else None):
            if not active:
                break
            same_tree = older.tree == newer.tree
            for p in list(active):
                run = versions[p]
                node = run[-1][0] if same_tree else tree.lookup(self.db, older.tree, p)
                if node == run[-1][0]:
                    run[-1][1] = older.id
                elif node is None or len(run) == limit:
                    active.discard(p)
                else:
                    run.append([node, older.id])
            newer = older
        return [
            msgspec.structs.replace(file_info(p, n), commit=cid)
            for p, _ in found
            for n, cid in versions[p]
        ]

    def walk_file(self, repo: str, ref: str, path: str = "") -> list[FileInfo]:
        path = names.path(path)
        node = self._node(repo, ref, path)
        out = [file_info(path, node)]
        if isinstance(node, DirNode):
            out.extend(file_info(p, n) for p, n in tree.walk(self.db, node, path))
        return out

    def glob_file(self, repo: str, ref: str, pattern: str) -> list[FileInfo]:
        return [file_info(p, n) for p, n in self.glob_nodes(repo, ref, pattern)]

    def glob_nodes(self, repo: str, ref: str, pattern: str) -> list[tuple[str, Node]]:
        c = self.index.resolve(repo, ref)
        return list(glob.glob(self.db, c.tree, pattern))

    def diff_file(
        self,
        new_repo: str,
        new_ref: str,
        new_path: str = "",
        old_repo: str | None = None,
        old_ref: str | None = None,
        old_path: str | None = None,
        shallow: bool = False,
    ) -> DiffResult:
        new_path = names.path(new_path)
        new_commit = self.index.resolve(new_repo, new_ref)
        old_repo = old_repo or new_repo
        old_path = new_path if old_path is None else names.path(old_path)
        if old_ref is None:
            old_commit = (
                self.index.commit(new_repo, new_commit.parent) if new_commit.parent else None
            )
        else:
            old_commit = self.index.resolve(old_repo, old_ref)

        def at(c: Commit | None, path: str) -> Node | None:
            if c is None:
                return None
            return tree.lookup(self.db, c.tree, path) if path else c.tree

        new, old = at(new_commit, new_path), at(old_commit, old_path)
        result = DiffResult([], [])
        if isinstance(new, DirNode) and isinstance(old, DirNode):
            if shallow:
                newer, older = dict(tree.list_dir(self.db, new)), dict(tree.list_dir(self.db, old))
                for name in sorted(newer.keys() | older.keys()):
                    if newer.get(name) != older.get(name):
                        if name in newer:
                            result.new.append(file_info(names.join(new_path, name), newer[name]))
                        if name in older:
                            result.old.append(file_info(names.join(old_path, name), older[name]))
                return result
            for path, n, o in tree.diff(self.db, new, old):
                if n is not None:
                    result.new.append(file_info(names.join(new_path, path), n))
                if o is not None:
                    result.old.append(file_info(names.join(old_path, path), o))
        elif new != old:
            result.new.extend(self._files_under(new_path, new))
            result.old.extend(self._files_under(old_path, old))
        return result

    def _files_under(self, path: str, node: Node | None) -> list[FileInfo]:
        if node is None:
            return []
        if not isinstance(node, DirNode):
            return [file_info(path, node)]
        return [file_info(p, n) for p, n in tree.walk(self.db, node, path) if not isinstance(n, DirNode)]

    # -- immutable objects by hash ---------------------------------------------------------------

    def dir_entries(
        self, root: bytes, start_after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Node]]:
        d = DirNode(root=root)
        return list(itertools.islice(tree.list_dir(self.db, d, start_after), limit))

    def dir_child(self, root: bytes, name: str) -> Node | None:
        return tree.child(self.db, DirNode(root=root), name)

    def chunk_list(self, file_hash: bytes) -> list[ChunkRef]:
        return list(tree.file_chunks(self.db, FileNode(0, file_hash, None)))

    def chunk_locations(self, hashes: list[bytes]) -> list[ChunkLoc]:
        return [self.location(h) for h in hashes]

    # -- admin ----------------------------------------------------------------------------------

    def fsck(self) -> list[str]:
        return fsck.check(self)

    def garbage_collect(self, dry_run: bool = False, orphan_age: float = 3600.0) -> GcResult:
        if orphan_age < 0:
            raise InvalidArgument("the orphan age must not be negative")
        return gc.collect(self, dry_run, orphan_age)

    def extract(self, objects: bool = True) -> Iterator[bytes]:
        return dump.extract(self, objects)

    def restore(self, dump_file: BinaryIO) -> RestoreResult:
        result = dump.restore(self, dump_file)
        self._notify()
        return result


def _checked(op: WriteOp) -> WriteOp:
    """The op with canonical paths; only Delete may name the root."""
    path = names.path(op.path)
    if not path and not isinstance(op, Delete):
        raise InvalidArgument(f"{type(op).__name__.lower()} needs a path: '/' is the root directory")
    if isinstance(op, Put) and op.split is not None and op.frame is not None:
        raise InvalidArgument(f"{path}: a put splits a file or sets a header or footer, not both")
    if isinstance(op, Put) and op.split is not None:
        names.check_depth(path, _RECORD_NAME)
    if isinstance(op, Symlink):
        names.link_target(op.target)
    changes = {"path": path}
    if isinstance(op, Copy):
        changes["src_path"] = names.path(op.src_path)
    return msgspec.structs.replace(op, **changes)


@dataclass
class _Staged:
    """A Put's data once stored: a file's chunks, or a split file's records and frame."""

    chunks: list[ChunkRef] | None = None
    records: list[list[ChunkRef]] | None = None
    header: list[ChunkRef] | None = None
    footer: list[ChunkRef] | None = None

    @property
    def size(self) -> int:
        parts = [self.chunks or (), self.header or (), self.footer or (), *(self.records or ())]
        return sum(c.size for part in parts for c in part)


def _read_up_to(stream, n: int) -> bytes:
    parts, total = [], 0
    while total < n and (piece := stream.read(n - total)):
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)


class _Batch:
    """Applies write ops in order to a commit's tree, gathering consecutive changes into one
    `tree.apply` and applying them early only when an op must read a path they touch."""

    def __init__(self, store: Store, w: _Write):
        self.store = store
        self.w = w
        self.root = w.commit.tree
        self.pending: dict[str, Node | None] = {}
        self.dirty: set[str] = set()  # ancestors of pending paths
        self.longest: dict[bytes, int] = {}  # page -> its longest path, for directory copies

    def flush(self) -> None:
        if self.pending:
            self.root = tree.apply(self.w.txn, self.root, self.pending)
            self.pending, self.dirty = {}, set()

    def node(self, path: str) -> Node | None:
        """The node at `path` after the ops applied so far."""
        if path in self.pending:
            return self.pending[path]
        if path in self.dirty or any(p in self.pending for p in _ancestors(path)):
            self.flush()
        return tree.lookup(self.w.txn, self.root, path) if path else self.root

    def set(self, path: str, node: Node | None) -> None:
        self.pending.pop(path, None)  # re-insert: changes apply in the order they were made
        self.pending[path] = node
        self.dirty.update(_ancestors(path))

    def apply(self, op: WriteOp, data: _Staged | None) -> None:
        path, txn = op.path, self.w.txn
        if isinstance(op, Put) and op.split is not None:
            self.split(path, data)
        elif isinstance(op, Put) and op.frame is not None:
            self.frame(path, op.frame, data.chunks)
        elif isinstance(op, Put):
            refs = data.chunks
            old = self.node(path)
            if isinstance(old, DirNode):
                raise FailedPrecondition(f"cannot write file {path}: it is a directory")
            if op.append and isinstance(old, FileNode):
                refs = [*tree.file_chunks(txn, old), *refs]
            executable = op.executable
            if executable is None:
                executable = isinstance(old, FileNode) and old.executable
            self.set(path, tree.make_file(txn, refs, executable))
        elif isinstance(op, Copy):
            node = self.source(op)
            if isinstance(node, DirNode) and names.byte_length(path) > names.byte_length(op.src_path):
                # Every path below it grows: none may pass the limit (restore would refuse it).
                names.check_depth(path, tree.longest_path(txn, node, self.longest))
            old = self.node(path) if op.append or not op.overwrite else None
            if not op.overwrite and old is not None:
                raise AlreadyExists(f"{path} already exists; use -o to overwrite")
            if op.append and old is not None:
                if not (isinstance(old, FileNode) and isinstance(node, FileNode)):
                    raise FailedPrecondition(f"cannot append {op.src_path} to {path}: both must be files")
                chunks = [*tree.file_chunks(txn, old), *tree.file_chunks(txn, node)]
                node = tree.make_file(txn, chunks, old.executable)
            self.set(path, node)
        elif isinstance(op, Delete):
            if not path:
                self.pending, self.dirty, self.root = {}, set(), EMPTY_DIR
            elif self.node(path) is not None:
                self.set(path, None)
            elif not op.missing_ok:
                raise NotFound(f"path {path} not found in {self.w.commit.repo}@{self.w.commit.id}")
        elif isinstance(op, Mkdir):
            old = self.node(path)
            if old is None:
                self.set(path, EMPTY_DIR)
            elif not isinstance(old, DirNode):
                raise AlreadyExists(f"{path} exists and is not a directory")
        elif isinstance(op, Symlink):
            self.set(path, SymlinkNode(op.target))
        elif isinstance(op, Chmod):
            old = self.node(path)
            if not isinstance(old, FileNode):
                raise InvalidArgument(f"{path} is not a file: only a file's executable bit is kept")
            self.set(path, msgspec.structs.replace(old, executable=op.executable))

    def split(self, path: str, data: _Staged) -> None:
        """Add records to the directory at `path` (made if missing), numbered on from its last."""
        txn = self.w.txn
        old = self.node(path)
        if old is not None and not isinstance(old, DirNode):
            raise FailedPrecondition(f"cannot split into {path}: it is a file")
        d = old or EMPTY_DIR
        if data.header is not None:  # a pg_dump's statements around its rows
            d = msgspec.structs.replace(
                d, header=tree.make_file(txn, data.header), footer=tree.make_file(txn, data.footer)
            )
        # Record names are fixed-width and numbered on, so they come sorted.
        first = _next_record(txn, d)
        records = [(f"{i:016x}", tree.make_file(txn, refs)) for i, refs in enumerate(data.records, first)]
        self.set(path, tree.update(txn, d, records))

    def frame(self, path: str, which: str, refs: list[ChunkRef]) -> None:
        """Set (or, with no data, remove) the header or footer of the directory at `path`."""
        old = self.node(path)
        if old is not None and not isinstance(old, DirNode):
            raise FailedPrecondition(
                f"{path} is a file: a {which} belongs on a directory, such as a split file's"
            )
        if old is None:
            if not refs:
                raise NotFound(f"no directory {path} in {self.w.commit.repo}@{self.w.commit.id}")
            old = EMPTY_DIR
        node = tree.make_file(self.w.txn, refs) if refs else None
        self.set(path, msgspec.structs.replace(old, **{which: node}))

    def source(self, op: Copy) -> Node:
        """What a Copy refers to; a copy within the commit being written sees the earlier ops."""
        commit = self.store.index.resolve(op.src_repo, op.src_ref, self.w.view)
        if (commit.repo, commit.id) == (self.w.commit.repo, self.w.commit.id):
            node = self.node(op.src_path)
        else:
            node = tree.lookup(self.store.db, commit.tree, op.src_path) if op.src_path else commit.tree
        if node is None:
            raise NotFound(f"path {op.src_path} not found in {op.src_repo}@{op.src_ref}")
        return node

    def finish(self) -> DirNode:
        self.flush()
        return self.root


def _next_record(src, d: DirNode) -> int:
    """The index after the last record of split directory `d` (0 when it has none)."""
    last = tree.floor(src, d, _LAST_RECORD)
    if last is None:
        return 0
    if _RECORD.fullmatch(last[0]):
        return int(last[0], 16) + 1
    # Other names sort among the records: look at them all.
    found = [int(name, 16) for name, _ in tree.list_dir(src, d) if _RECORD.fullmatch(name)]
    return max(found, default=-1) + 1


def _ancestors(path: str) -> Iterator[str]:
    """'a', 'a/b' for 'a/b/c' (and the root, '')."""
    yield ""
    i = path.find("/")
    while i >= 0:
        yield path[:i]
        i = path.find("/", i + 1)


class _Write:
    """A write in progress: the mutation and the commit it lands in."""

    def __init__(self, index: Index, view: View, commit: Commit):
        self._index = index
        self.view = view
        self.txn = view.txn
        self.commit = commit

    def set_tree(self, new: DirNode) -> None:
        self.commit = self._index.set_tree(self.view, self.commit, new)
