"""Writing files: a write's data is staged as chunks first (outside the index lock) and indexed
where it landed; only then do the tree and the commit change, in one atomic batch. A crash or an
error at any point leaves finished commits untouched and at worst some unreferenced chunks for
the garbage collector."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec

from pfsfuse import ingress, split
from pfsfuse.api.types import (
    Chmod,
    Copy,
    Dated,
    Delete,
    Listing,
    Mkdir,
    Mknod,
    Put,
    SetStat,
    Symlink,
    WriteOp,
    WriteResult,
    located_bytes,
)
from pfsfuse.chunks import StorageError
from pfsfuse.engine.changes import stage_changed
from pfsfuse.engine.core import EngineCore, Staging
from pfsfuse.engine.sources import open_source
from pfsfuse.metadata import etags, names, tree
from pfsfuse.metadata.errors import (
    AlreadyExists,
    BaseChanged,
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
    ChunkRef,
    Commit,
    DirNode,
    FileNode,
    Node,
    SpecialNode,
    Stat,
    SymlinkNode,
    Xattrs,
    link_of,
)

_RECORD = re.compile(r"[0-9a-f]{16}")  # the name of a split file's record
_LAST_RECORD = "f" * 16
_RECORD_NAME = len(_LAST_RECORD)  # bytes a record's name adds below its split file's path
_MAX_FRAME = 64 << 20  # headers and footers are read whole
# A write asked for its listings answers those of the directories it changed with at most
# SMALL_LISTING entries (sqlite's journal and an editor's temporary file come and go in such a
# directory at every save), unless it changed more than LISTED_DIRS directories.
SMALL_LISTING = 64
LISTED_DIRS = 8


class Writes(EngineCore):
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
                        f"commit {target.id} in repo {repo} is finished; write to a branch or an open commit"
                    )
            w = _Write(self.index, v, target)
            yield w
            if auto:
                w.commit = msgspec.structs.replace(w.commit, finished=time.time())
                v.put_commit(w.commit)
        if auto:  # a commit finished and the branch moved; a write into an open commit does neither
            self.notify_changed()

    def write_files(self, repo: str, ref: str, ops: Iterable[WriteOp], listings: bool = False) -> WriteResult:
        self._check_writable(repo, ref)
        staged: list[tuple[WriteOp, _Staged | None]] = []
        files = total = 0
        # The staging's claims keep the chunks the write refers to alive until its commit change
        # is durable.
        with self.staging() as staging:
            try:
                for op in ingress.expand(ops):
                    op = _checked(op)
                    data = None
                    if isinstance(op, Put):
                        if op.chunks is not None:  # stored by the client itself
                            data = _Staged(chunks=staging.adopt(op.chunks, located_bytes(op.chunks), op.proof))
                        else:
                            with open_source(op) as stream:
                                data = self._stage(op, stream, staging, self._since(repo, ref, op))
                        files += 1
                        total += data.size
                    staged.append((op, data))
                staging.flush()
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise NoSpace(f"no space left on device while storing chunks: {e}") from None
                raise
            except StorageError as e:
                raise Unavailable(f"cannot store chunks: {e}") from None
            with self._writing(repo, ref) as w:
                batch = _Batch(self, w)
                for op, data in staged:
                    batch.apply(op, data)
                w.set_tree(batch.finish())
                small = batch.small_listings() if listings else []
        return WriteResult(w.commit.id, files, total, staging.bytes_stored, w.commit.tree, small, batch.contents)

    def _since(self, repo: str, ref: str, op: Put) -> FileNode | None:
        """The stored file a Put's `changed` ranges are relative to, if it is still at its path
        (in `since_ref`, or else in the commit written). A sparse put without it fails: its
        data is not all there to read whole."""
        if op.since is None or op.changed is None or op.local is None:
            return None
        try:
            node = tree.lookup(self.db, self.index.resolve(repo, op.since_ref or ref).tree, op.path)
        except NotFound:  # (since_ref deleted since)
            node = None
        if isinstance(node, FileNode) and node.hash == op.since:
            return node
        if op.sparse:
            raise BaseChanged(f"{op.path}: the file it was copied from is no longer there: send it whole")
        return None

    def _stage(self, op: Put, stream, staging: Staging, since: FileNode | None = None) -> _Staged:
        """Store a Put's data as chunks, before the commit changes."""
        if op.split is not None:
            splitter = split.Splitter(stream, op.split, op.target_datums, op.target_bytes)
            records = [staging.put_buffer(r) for r in splitter]
            frame = [None if part is None else staging.put_buffer(part) for part in (splitter.header, splitter.footer)]
            return _Staged(records=records, header=frame[0], footer=frame[1])
        if op.frame is not None:
            if op.frame not in ("header", "footer"):
                raise InvalidArgument(f"unknown frame {op.frame!r}: use header or footer")
            data = _read_up_to(stream, _MAX_FRAME + 1)
            if len(data) > _MAX_FRAME:
                raise InvalidArgument(f"a {op.frame} is limited to {_MAX_FRAME >> 20} MiB")
            # `echo "" | pfs put-header ...` removes it, as in the Pachyderm docs.
            empty = data in (b"", b"\n", b"\r\n")
            return _Staged(chunks=[] if empty else staging.put_buffer(data))
        if since is not None:
            assert op.changed is not None  # `_since` found the file they are relative to
            old = tree.file_chunks(self.db, since)
            read_old = self.read_chunks if op.sparse else None
            chunks = stage_changed(self.chunks.chunker, stream.fileno(), old, op.changed, staging, op.final, read_old)
            if chunks is not None:
                return _Staged(chunks=chunks)
            if op.sparse:
                raise BaseChanged(f"{op.path}: the file it was copied from is no longer whole: send it whole")
        if op.local is not None:  # a file we opened ourselves: read ahead while cutting
            pieces = self.chunks.chunker.cut_file(stream.fileno())
        else:
            pieces = self.chunks.chunker.cut(stream)
        return _Staged(chunks=staging.put_all(pieces))


def _checked(op: WriteOp) -> WriteOp:
    """The op with canonical paths; only Delete may name the root."""
    path = names.path(op.path)
    if not path and not isinstance(op, Delete):
        raise InvalidArgument(f"{type(op).__name__.lower()} needs a path: '/' is the root directory")
    if isinstance(op, Put) and op.split is not None and op.frame is not None:
        raise InvalidArgument(f"{path}: a put splits a file or sets a header or footer, not both")
    if isinstance(op, Put) and op.split is not None:
        names.check_depth(path, _RECORD_NAME)
    if isinstance(op, Put) and op.chunks is not None and (op.split or op.frame or op.url or op.local):
        raise InvalidArgument(f"{path}: a put of stored chunks takes no other source, split or frame")
    if isinstance(op, Put) and op.changed is not None and (op.split or op.frame or op.append or op.url):
        raise InvalidArgument(f"{path}: changed ranges describe one whole file's bytes, not a split, frame or append")
    if isinstance(op, Put) and (op.sparse or op.since_ref) and (op.since is None or op.changed is None or not op.local):
        raise InvalidArgument(f"{path}: a sparse put or a since_ref needs since, changed and a local file")
    if isinstance(op, Put) and op.etag is not None:
        if op.split or op.frame or op.append or op.recursive:
            raise InvalidArgument(f"{path}: an ETag names one whole file's bytes, not a split, frame or append")
        etags.check(op.etag)
    if isinstance(op, Symlink):
        names.link_target(op.target)
    if isinstance(op, Dated) and not 0 <= op.at < 1 << 63:
        raise InvalidArgument(f"{path}: bad time {op.at}")
    stat = getattr(op, "stat", None)
    if stat is not None:
        try:  # built in-process, the record's bounds are not checked yet
            msgspec.convert(msgspec.to_builtins(stat), Stat)
        except msgspec.ValidationError as e:
            raise InvalidArgument(f"{path}: bad mode, owner or time: {e}") from None
        if stat.xattrs:
            names.xattrs(stat.xattrs)
    xattrs = getattr(op, "xattrs", None)
    if xattrs:
        names.xattrs(xattrs)
    if xattrs is not None and (
        (isinstance(op, Put) and (op.split or op.frame or op.recursive)) or (isinstance(op, Copy) and op.link)
    ):
        raise InvalidArgument(f"{path}: extended attributes are given to a put or copied file of its own")
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

    def __init__(self, store: EngineCore, w: _Write):
        self.store = store
        self.w = w
        self.root = w.commit.tree
        self.pending: dict[str, Node | None] = {}
        self.dirty: set[str] = set()  # ancestors of pending paths
        self.longest: dict[bytes, int] = {}  # page -> its longest path, for directory copies
        # directory -> when (the op count) it last gained or lost an entry, and when it was last
        # given a stat: one given after its entries changed (tar's utime at the end) is kept.
        self.entries_changed: dict[str, int] = {}
        self.stat_given: dict[str, int] = {}
        self.dated: dict[str, int] = {}  # directory -> the time a `Dated` op gives its change
        # Hard links whose names changed, or whose file did: link id -> the file as it is now
        # (None when only a name went). `finish` gives every name of each the same file.
        self.linked: dict[int, Node | None] = {}
        self.parents: dict[str, None] = {}  # the directories with an entry set, in order
        self.contents: list[bytes] = []  # the content hash of each Put that gave `changed`
        self.ops = 0

    def flush(self) -> None:
        if self.pending:
            self.root = tree.apply(self.w.txn, self.root, self.pending)
            self.pending, self.dirty = {}, set()

    def node(self, path: str) -> Node | None:
        """The node at `path` after the ops applied so far."""
        # A pending node is current only if nothing pending below (dirty) or above changes it.
        if path in self.dirty or any(p in self.pending for p in _ancestors(path)):
            self.flush()
        elif path in self.pending:
            return self.pending[path]
        return tree.lookup(self.w.txn, self.root, path) if path else self.root

    def set(self, path: str, node: Node | None, new_entry: bool = False) -> None:
        self.pending.pop(path, None)  # re-insert: changes apply in the order they were made
        self.pending[path] = node
        self.dirty.update(_ancestors(path))
        self.parents[names.split(path)[0]] = None
        if new_entry or node is None:
            self.entries_changed[names.split(path)[0]] = self.ops
        if isinstance(node, DirNode) and node.stat is not None:
            self.stat_given[path] = self.ops
        link = link_of(node)
        if link is not None:
            self.linked[link] = node

    def unname(self, old: Node | None) -> None:
        """A name of `old` is going: if it is a hard link, its other names count one less."""
        link = link_of(old)
        if link is not None:
            self.linked.setdefault(link, None)

    def apply(self, op: WriteOp, data: _Staged | None) -> None:
        path, txn = op.path, self.w.txn
        self.ops += 1
        if isinstance(op, Put):
            assert data is not None  # every Put's data is staged first
            self.put(path, op, data)
        elif isinstance(op, Copy) and op.link:
            self.link(path, op)
        elif isinstance(op, Copy):
            node = _own(self.source(op), None)  # a copy is a file of its own, not another name
            if isinstance(node, DirNode) and names.byte_length(path) > names.byte_length(op.src_path):
                # Every path below it grows: none may pass the limit (restore would refuse it).
                names.check_depth(path, tree.longest_path(txn, node, self.longest))
            old = self.node(path)
            if not op.overwrite and old is not None:
                raise AlreadyExists(f"{path} already exists; use -o to overwrite")
            if op.append and old is not None:
                if not (isinstance(old, FileNode) and isinstance(node, FileNode)):
                    raise FailedPrecondition(f"cannot append {op.src_path} to {path}: both must be files")
                chunks = [*tree.file_chunks(txn, old), *tree.file_chunks(txn, node)]
                stat = None if old.stat is None else _touched(old.stat)
                node = msgspec.structs.replace(tree.make_file(txn, chunks, old.executable), stat=stat)
            else:
                self.unname(old)
                if isinstance(node, FileNode):
                    etags.copy(self.store.db, txn, op.src_repo, self.w.commit.repo, node.hash)
            self.set(path, node if op.xattrs is None else _with_xattrs(node, op.xattrs), new_entry=True)
        elif isinstance(op, Delete):
            if not path:
                self.pending, self.dirty, self.root = {}, set(), EMPTY_DIR
            elif (gone := self.node(path)) is not None:
                self.unname(gone)
                self.set(path, None)
            elif not op.missing_ok:
                raise NotFound(f"path {path} not found in {self.w.commit.repo}@{self.w.commit.id}")
        elif isinstance(op, Mkdir):
            op = msgspec.structs.replace(op, stat=_own_stat(op.stat, None))
            old = self.node(path)
            if old is None:
                self.set(path, DirNode(stat=op.stat, subdirs=0), new_entry=True)
            elif not isinstance(old, DirNode):
                raise AlreadyExists(f"{path} exists and is not a directory")
            elif op.stat is not None:  # given even if unchanged: entries made before do not move it
                if op.stat != old.stat:
                    self.set(path, msgspec.structs.replace(old, stat=op.stat))
                self.stat_given[path] = self.ops
        elif isinstance(op, Symlink):
            self.unname(self.node(path))
            self.set(path, SymlinkNode(op.target, _own_stat(op.stat, None)), new_entry=True)
        elif isinstance(op, Mknod):
            if op.kind not in ("char", "block") and op.rdev:
                raise InvalidArgument(f"{path}: only a device node has a device number")
            self.unname(self.node(path))
            self.set(path, SpecialNode(op.kind, op.rdev, _own_stat(op.stat, None)), new_entry=True)
        elif isinstance(op, Chmod):
            old = self.node(path)
            if not isinstance(old, FileNode):
                raise InvalidArgument(f"{path} is not a file: only a file's executable bit is kept")
            stat = None if old.stat is None else _touched(old.stat, x=op.executable, content=False)
            self.set(path, msgspec.structs.replace(old, executable=op.executable, stat=stat))
        elif isinstance(op, Dated):
            self.dated[path] = op.at
        elif isinstance(op, SetStat):
            old = self.node(path)
            if old is None:
                raise NotFound(f"path {path} not found in {self.w.commit.repo}@{self.w.commit.id}")
            changes: dict = {"stat": _own_stat(op.stat, old.stat)}
            if isinstance(old, FileNode):
                changes["executable"] = bool(op.stat.mode & 0o111)
            self.set(path, msgspec.structs.replace(old, **changes))

    def put(self, path: str, op: Put, data: _Staged) -> None:
        txn = self.w.txn
        if op.split is not None:
            self.split(path, data)
        elif op.frame is not None:
            self.frame(path, op.frame, data.chunks or [])
        else:
            refs = data.chunks or []
            old = self.node(path)
            if isinstance(old, DirNode):
                raise FailedPrecondition(f"cannot write file {path}: it is a directory")
            if op.append and isinstance(old, FileNode):
                refs = [*tree.file_chunks(txn, old), *refs]
            executable = op.executable
            if executable is None:
                executable = isinstance(old, FileNode) and old.executable
            stat = _own_stat(op.stat, old.stat if isinstance(old, FileNode) else None)
            if op.stat is None and isinstance(old, FileNode) and old.stat is not None:
                stat = _touched(old.stat, x=executable if op.executable is not None else None)
            if not isinstance(old, FileNode):
                self.unname(old)
            if stat is not None:
                executable = bool(stat.mode & 0o111)
            node = tree.make_file(txn, refs, executable)
            if op.changed is not None:
                self.contents.append(node.hash)
            if op.etag is not None:
                etags.record(txn, self.w.commit.repo, node.hash, op.etag)
            node = msgspec.structs.replace(node, stat=stat)
            self.set(path, node if op.xattrs is None else _with_xattrs(node, op.xattrs), old is None)

    def split(self, path: str, data: _Staged) -> None:
        """Add records to the directory at `path` (made if missing), numbered on from its last."""
        txn = self.w.txn
        old = self.node(path)
        if old is not None and not isinstance(old, DirNode):
            raise FailedPrecondition(f"cannot split into {path}: it is a file")
        d = old or EMPTY_DIR
        if data.header is not None:  # a pg_dump's statements around its rows
            d = msgspec.structs.replace(
                d, header=tree.make_file(txn, data.header), footer=tree.make_file(txn, data.footer or [])
            )
        # Record names are fixed-width and numbered on, so they come sorted.
        first = _next_record(txn, d)
        records = [(f"{i:016x}", tree.make_file(txn, refs)) for i, refs in enumerate(data.records or (), first)]
        self.set(path, tree.update(txn, d, records))

    def frame(self, path: str, which: str, refs: list[ChunkRef]) -> None:
        """Set (or, with no data, remove) the header or footer of the directory at `path`."""
        old = self.node(path)
        if old is not None and not isinstance(old, DirNode):
            raise FailedPrecondition(f"{path} is a file: a {which} belongs on a directory, such as a split file's")
        if old is None:
            if not refs:
                raise NotFound(f"no directory {path} in {self.w.commit.repo}@{self.w.commit.id}")
            old = EMPTY_DIR
        node = tree.make_file(self.w.txn, refs) if refs else None
        self.set(path, msgspec.structs.replace(old, **{which: node}))

    def link(self, path: str, op: Copy) -> None:
        """Make `path` another name of the file at `op.src_path` of this commit (a hard link)."""
        if op.src_repo != self.w.commit.repo:
            raise InvalidArgument(f"{path}: a hard link names a file of the same repo and branch")
        src = self.node(op.src_path)
        if src is None:
            raise NotFound(f"path {op.src_path} not found in {self.w.commit.repo}@{self.w.commit.id}")
        if isinstance(src, DirNode):
            raise InvalidArgument(f"{path}: a directory cannot be hard-linked ({op.src_path})")
        old = self.node(path)
        if old is not None and (not op.overwrite or isinstance(old, DirNode)):
            raise AlreadyExists(f"{path} already exists")
        if path == op.src_path or (old is not None and link_of(old) == link_of(src) is not None):
            return  # already a name of it
        self.unname(old)
        now = time.time_ns()
        st = src.stat or _shown_stat(src, now)
        # A new name changes the file's ctime, as on a disk.
        st = msgspec.structs.replace(st, ctime=now, link=st.link or secrets.randbelow((1 << 63) - 2) + 1)
        node = msgspec.structs.replace(src, stat=st)
        self.set(op.src_path, node)
        self.set(path, node, new_entry=True)

    def relink(self) -> None:
        """Give every name of each hard link changed in this batch the file as it is now, and
        their count. Finding the names takes a walk of the tree, only when a batch changes links."""
        if not self.linked:
            return
        self.flush()
        groups: dict[int, list[tuple[str, Node, Stat]]] = {}
        for p, n in tree.walk(self.w.txn, self.root):
            link = link_of(n)
            if link is not None and link in self.linked:
                assert not isinstance(n, DirNode) and n.stat is not None  # (it has a link id)
                groups.setdefault(link, []).append((p, n, n.stat))
        now = time.time_ns()
        for link, members in groups.items():
            for p, n, own in members:
                base = self.linked[link] or n
                st = base.stat or own
                if st.nlink != len(members):  # a name came or went: the file's ctime moves, as on a disk
                    st = msgspec.structs.replace(st, nlink=len(members), ctime=now)
                want = msgspec.structs.replace(base, stat=st)
                if want != n:
                    self.pending[p] = want
                    self.dirty.update(_ancestors(p))
        self.linked = {}
        self.flush()

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
        """The new tree, where a directory with a stat that gained or lost entries has its mtime
        and ctime moved to now (or to the time a `Dated` op gives), as on a disk."""
        self.relink()
        now = time.time_ns()
        for path, when in sorted(self.entries_changed.items()):
            if not path or self.stat_given.get(path, -1) >= when:  # (the root has no stat)
                continue
            d = self.node(path)
            if isinstance(d, DirNode) and d.stat is not None:
                at = self.dated.get(path, now)
                self.set(path, msgspec.structs.replace(d, stat=msgspec.structs.replace(d.stat, mtime=at, ctime=at)))
        self.flush()
        return self.root

    def small_listings(self) -> list[Listing]:
        """(root, entries) of the directories the ops changed (those with an entry set and all
        above them) that have at most SMALL_LISTING entries; none for a write that changed more
        than LISTED_DIRS directories (a put-file of a tree: nobody is about to list them)."""
        dirs: dict[str, None] = {}
        for parent in self.parents:
            dirs[parent] = None
            dirs.update(dict.fromkeys(_ancestors(parent)))
            if len(dirs) > LISTED_DIRS:
                return []
        out = []
        for path in dirs:
            d = self.node(path)
            if isinstance(d, DirNode) and d.root is not None and d.count <= SMALL_LISTING:
                out.append((d.root, list(tree.list_dir(self.w.txn, d))))
        return out


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


def _touched(stat: Stat, x: bool | None = None, content: bool = True) -> Stat:
    """`stat` after a change made without one: its ctime (and for new content its mtime) now, and
    with `x` the execute bits set (where read is) or cleared."""
    now = time.time_ns()
    mode = stat.mode
    if x is not None:
        mode = mode | ((mode & 0o444) >> 2) if x else mode & ~0o111
        if x and not mode & 0o111:
            mode |= 0o100
    return msgspec.structs.replace(stat, mode=mode, mtime=now if content else stat.mtime, ctime=now)


def _default_mode(node: Node) -> int:
    """The mode an entry stored without a stat shows (see the mount's `stat_of`)."""
    if isinstance(node, FileNode):
        return 0o755 if node.executable else 0o644
    return 0o777 if isinstance(node, SymlinkNode) else 0o644


def _shown_stat(node: Node, now: int) -> Stat:
    """A stat for an entry stored without one, which a change gives it: the daemon's user's."""
    return Stat(_default_mode(node), os.getuid(), os.getgid(), now, now)


def _with_xattrs(node: Node, xattrs: Xattrs) -> Node:
    """`node` with these user extended attributes instead of its own."""
    if not xattrs and (node.stat is None or node.stat.xattrs is None):
        return node  # none to give and none to take away
    st = node.stat or _shown_stat(node, time.time_ns())
    return msgspec.structs.replace(node, stat=msgspec.structs.replace(st, xattrs=xattrs or None))


def _own_stat(stat: Stat | None, old: Stat | None) -> Stat | None:
    """A stat a write gives, with the link id and count of the entry it replaces (the store
    keeps those: a write through a name of a hard link is a write to the file)."""
    if stat is None or old is None:
        if stat is None or (stat.link is None and stat.nlink is None):
            return stat
        return msgspec.structs.replace(stat, link=None, nlink=None)
    return msgspec.structs.replace(stat, link=old.link, nlink=old.nlink)


def _own(node: Node, old: Stat | None) -> Node:
    """`node` as a file of its own: not a name of a hard link."""
    if link_of(node) is None:
        return node
    return msgspec.structs.replace(node, stat=_own_stat(node.stat, old))


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
