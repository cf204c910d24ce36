"""The file engine: the in-process implementation of the API over the index and the chunk store.

Writes stream data through the chunker into packs first (outside the index lock), record where new
chunks landed, and only then change the tree and the commit in one atomic batch, so a crash or an
error at any point leaves finished commits untouched and at worst some unreferenced chunks for the
garbage collector.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import threading
import time
from collections.abc import Iterable, Iterator

import httpx
import msgspec

from pfsfuse import fsck
from pfsfuse.api.client import Client
from pfsfuse.api.types import (
    Chmod,
    Copy,
    Delete,
    DiffResult,
    FileInfo,
    Mkdir,
    Put,
    ReadPlan,
    RepoInfo,
    Symlink,
    WriteOp,
    WriteResult,
)
from pfsfuse.chunks import ChunkLoc, ChunkStore, CorruptChunk, ObjectNotFound, open_store
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
        staged: list[tuple[WriteOp, list[ChunkRef] | None]] = []
        files = total = 0
        try:
            for op in ops:
                op = _checked(op)
                refs = None
                if isinstance(op, Put):
                    with self._open_source(op) as stream:
                        refs = self._store(stream, writer)
                    files += 1
                    total += sum(r.size for r in refs)
                staged.append((op, refs))
            self._record(writer.flush())
        except OSError as e:
            writer.abort()
            if e.errno == errno.ENOSPC:
                raise NoSpace(f"no space left on device while storing chunks: {e}") from None
            raise
        except BaseException:
            writer.abort()
            raise
        with self._writing(repo, ref) as w:
            batch = _Batch(self, w)
            for op, refs in staged:
                batch.apply(op, refs)
            w.set_tree(batch.finish())
        return WriteResult(w.commit.id, files, total, writer.bytes_stored)

    def _store(self, stream, writer) -> list[ChunkRef]:
        """Chunk a stream into the pack writer; chunks the store already has are not written."""
        refs = []
        for piece in self.chunks.chunker.cut(stream):
            h = self.chunks.hash(piece)
            refs.append(ChunkRef(h, len(piece)))
            if not writer.pending(h) and self.index.chunk_location(h) is None:
                self._record(writer.add(h, piece))
        return refs

    def _record(self, locations: list[tuple[bytes, ChunkLoc]]) -> None:
        """Index chunks that are now durable in the object store."""
        if locations:
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
            with _fetch(op.url) as stream:
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

    def _file(self, repo: str, ref: str, path: str) -> FileNode:
        node = self._node(repo, ref, path)
        if isinstance(node, DirNode):
            raise InvalidArgument(f"{repo}@{ref}:{names.path(path) or '/'} is a directory; use -r")
        if isinstance(node, SymlinkNode):
            raise InvalidArgument(f"{repo}@{ref}:{path} is a symlink to {node.target}")
        return node

    def location(self, h: bytes) -> ChunkLoc:
        data = self.index.chunk_location(h)
        if data is None:
            raise DataLoss(f"chunk {h.hex()} is referenced but not in the chunk index")
        return _LOC.decode(data)

    def read_chunk(self, ref: ChunkRef) -> bytes:
        return b"".join(self._read([ref]))

    def _read(self, refs, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        located = [(r.hash, r.size, self.location(r.hash)) for r in refs]
        try:
            yield from self.chunks.reader.read_range(located, offset, length)
        except (CorruptChunk, ObjectNotFound) as e:
            raise DataLoss(str(e)) from None

    def get_file(
        self, repo: str, ref: str, path: str, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        node = self._file(repo, ref, path)
        return self._read(tree.file_chunks(self.db, node), offset, length)

    def read_plan(self, repo: str, ref: str, path: str) -> ReadPlan:
        node = self._file(repo, ref, path)
        refs = tree.file_chunks(self.db, node)
        return ReadPlan(file_info(names.path(path), node), [(r, self.location(r.hash)) for r in refs])

    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo:
        return file_info(names.path(path), self._node(repo, ref, path))

    def list_file(
        self,
        repo: str,
        ref: str,
        path: str = "",
        start_after: str | None = None,
        limit: int | None = None,
    ) -> list[FileInfo]:
        path = names.path(path)
        node = self._node(repo, ref, path)
        if not isinstance(node, DirNode):
            return [file_info(path, node)]
        out = []
        for name, child in tree.list_dir(self.db, node, start_after):
            if limit is not None and len(out) >= limit:
                break
            out.append(file_info(names.join(path, name), child))
        return out

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


def _checked(op: WriteOp) -> WriteOp:
    """The op with canonical paths; only Delete may name the root."""
    path = names.path(op.path)
    if not path and not isinstance(op, Delete):
        raise InvalidArgument(f"{type(op).__name__.lower()} needs a path: '/' is the root directory")
    changes = {"path": path}
    if isinstance(op, Copy):
        changes["src_path"] = names.path(op.src_path)
    return msgspec.structs.replace(op, **changes)


class _Batch:
    """Applies write ops in order to a commit's tree, gathering consecutive changes into one
    `tree.apply` and applying them early only when an op must read a path they touch."""

    def __init__(self, store: Store, w: _Write):
        self.store = store
        self.w = w
        self.root = w.commit.tree
        self.pending: dict[str, Node | None] = {}
        self.dirty: set[str] = set()  # ancestors of pending paths

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

    def apply(self, op: WriteOp, refs: list[ChunkRef] | None) -> None:
        path, txn = op.path, self.w.txn
        if isinstance(op, Put):
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


class _HttpStream(io.RawIOBase):
    """A readable file over a streaming HTTP response."""

    def __init__(self, response: httpx.Response):
        self._it = response.iter_bytes(1 << 20)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@contextlib.contextmanager
def _fetch(url: str):
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"unsupported URL {url!r}: use http:// or https://")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as r:
            if r.status_code != 200:
                raise Unavailable(f"cannot fetch {url}: HTTP {r.status_code}")
            yield io.BufferedReader(_HttpStream(r), 1 << 20)
    except httpx.HTTPError as e:
        raise Unavailable(f"cannot fetch {url}: {e or type(e).__name__}") from None
