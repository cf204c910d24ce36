"""`pfs extract` and `pfs restore`: a store's repos, commits, branches and data as one versioned
stream, and its replay into an empty store with the same commit ids.

A dump is MAGIC, then frames: u32 length | u32 crc32 of the payload | msgpack record. The records
come in an order that can be replayed as it is read: Info; the repos; each repo's commits, parents
first, each followed by the changes that turn its parent's tree into its own (a chunk's data comes
once, before the first file that uses it; a file carries its S3 ETag, format 3); the branches; the
auth records (format 2: admins, ACLs and the hashes of lasting tokens, never one-time passwords or
pipelines' tokens); and End, without which a dump is truncated.

Chunk ids and tree hashes are keyed with the store's secret seed, which a dump does not carry:
restore hashes every chunk again with its own store's seed and rebuilds the trees from the
changes. A dump without objects carries where each chunk is stored instead of its data, so it can
only be restored by a store with the same seed and object store (the same store.json with a new
index); Info's seed check tells.

Restore writes tree pages and chunks as it goes, and the repos, commits and branches that make
them visible in one final batch: a dump that is truncated or corrupt leaves nothing but garbage
for the collector.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import time
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

import msgspec
from msgspec import Struct

from pfsfuse.api.types import RestoreResult
from pfsfuse.chunks import ChunkLoc, CorruptPack, ObjectNotFound, pack_key
from pfsfuse.metadata import etags, names, tree
from pfsfuse.metadata.auth import Acl, AuthConfig, AuthRecords, TokenRecord
from pfsfuse.metadata.errors import DataLoss, FailedPrecondition, InvalidArgument
from pfsfuse.metadata.records import (
    EMPTY_DIR,
    Branch,
    ChunkRef,
    Commit,
    DirNode,
    FileNode,
    Node,
    Repo,
    SpecialNode,
    Stat,
    SymlinkNode,
)
from pfsfuse.version import VERSION

if TYPE_CHECKING:
    from pfsfuse.engine.core import EngineCore, Staging

MAGIC = b"PFSDUMP\n"
FORMAT = 3  # 2: with the auth records; 3: with files' S3 ETags; older dumps are read too
_FRAME = struct.Struct(">II")
_MAX_FRAME = 64 << 20
_PIECE = 1 << 20  # bytes of frames yielded at a time


class Info(Struct, tag="info", array_like=True):
    format: int
    version: str  # of the pfs that wrote it
    created: float
    objects: bool  # whether chunks carry their data (else their locations)
    seed_check: bytes  # tells whether a store has the same seed


class RepoRec(Struct, tag="repo", array_like=True):
    repo: Repo


class CommitRec(Struct, tag="commit", array_like=True):
    commit: Commit  # its tree is left out: the records up to the next commit rebuild it


class ChunkRec(Struct, tag="chunk", array_like=True):
    hash: bytes
    size: int
    data: bytes | None = None
    loc: ChunkLoc | None = None


class FileRec(Struct, tag="file", array_like=True):
    path: str
    chunks: list[ChunkRef]
    executable: bool = False
    stat: Stat | None = None  # (absent from older dumps)
    etag: str | None = None  # what S3 clients were told of these bytes in this repo (format 3)


class LinkRec(Struct, tag="link", array_like=True):
    path: str
    target: str
    stat: Stat | None = None


class SpecialRec(Struct, tag="special", array_like=True):
    path: str
    node: SpecialNode


class DeleteRec(Struct, tag="delete", array_like=True):
    path: str


class DirRec(Struct, tag="dir", array_like=True):
    """A directory with this header and footer; `keep`: the directory there keeps its entries
    (only its frame changed), else it replaces what is there and its entries follow."""

    path: str
    header: list[ChunkRef] | None
    footer: list[ChunkRef] | None
    keep: bool
    stat: Stat | None = None


class BranchRec(Struct, tag="branch", array_like=True):
    branch: Branch


class AuthRec(Struct, tag="auth", array_like=True):
    """Auth as it was: active with these admins (None: not active), each repo's ACL, and the
    tokens by the SHA-256 of their secret (which a dump therefore never holds)."""

    admins: list[str] | None
    acls: dict[str, Acl]
    tokens: dict[bytes, TokenRecord]


class EndRec(Struct, tag="end", array_like=True):
    repos: int
    commits: int
    branches: int
    chunks: int


Change = FileRec | LinkRec | SpecialRec | DeleteRec | DirRec  # a change to the current commit's tree
Record = Info | RepoRec | CommitRec | ChunkRec | Change | BranchRec | AuthRec | EndRec
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode


def seed_check(seed: int) -> bytes:
    """Equal for stores with equal seeds; tells nothing about the seed."""
    return hashlib.blake2b(b"pfs dump seed check", key=seed.to_bytes(8, "big"), digest_size=16).digest()


# -- extract -------------------------------------------------------------------------------------


def extract(store: EngineCore, objects: bool = True) -> Iterator[bytes]:
    """The dump, in pieces. Errors that prevent it (another extract running) are raised here."""
    pieces = _extract(store, objects)
    first = next(pieces)  # takes the lock and the snapshot
    return itertools.chain([first], pieces)


def _extract(store: EngineCore, objects: bool) -> Iterator[bytes]:
    with store.exclusively():  # no collection may delete what the snapshot refers to
        idx = store.index
        with store.db.lock:
            repos = idx.repos()
            commits = {r.name: list(idx.commits(r.name)) for r in repos}
            branches = [b for r in repos for b in idx.branches(r.name)]
            auth = _auth_of(store)
        out = _Frames()
        out.add(Info(FORMAT, VERSION, time.time(), objects, seed_check(store.config.seed)))
        out.add_all(RepoRec(r) for r in repos)
        yield MAGIC + out.take()
        chunks: set[bytes] = set()
        n_commits = 0
        for repo in repos:
            by_id = {c.id: c for c in commits[repo.name]}
            for c in _parents_first(by_id):
                parent = by_id[c.parent].tree if c.parent else EMPTY_DIR
                out.add(CommitRec(msgspec.structs.replace(c, tree=EMPTY_DIR)))
                n_commits += 1
                for rec in _changes(store, repo.name, c.tree, parent):
                    _chunks_of(store, rec, chunks, objects, out)
                    out.add(rec)
                    if out.full():
                        yield out.take()
        out.add_all(BranchRec(b) for b in branches)
        out.add(auth)
        out.add(EndRec(len(repos), n_commits, len(branches), len(chunks)))
        yield out.take()


def _auth_of(store: EngineCore) -> AuthRec:
    """What a restore needs to give the same people the same access: not one-time passwords
    (short-lived, for one person), expired tokens, or pipelines' tokens (minted again)."""
    config, tokens, acls = AuthRecords(store.db).load()
    now = time.time()
    lasting = {
        h: t for h, t in tokens.items() if not t.one_time and t.expires > now and not t.subject.startswith("pipeline:")
    }
    return AuthRec(None if config is None else config.admins, acls, lasting)


def _parents_first(by_id: dict[str, Commit]) -> list[Commit]:
    order: list[Commit] = []
    done: set[str] = set()
    for first in sorted(by_id.values(), key=lambda c: c.id):
        chain = []
        c: Commit | None = first
        while c is not None and c.id not in done:
            done.add(c.id)
            chain.append(c)
            c = by_id.get(c.parent) if c.parent else None
        order.extend(reversed(chain))
    return order


def _changes(store: EngineCore, repo: str, new: DirNode, old: DirNode, prefix: str = "") -> Iterator[Record]:
    """The records that turn tree `old` of `repo` into `new`: only what differs, in path order."""
    db = store.db
    stack = [(prefix, tree.diff_entries(db, new, old))]
    while stack:
        base, entries = stack[-1]
        for name, n, o in entries:
            path = names.join(base, name)
            if isinstance(n, DirNode):
                kept = o if isinstance(o, DirNode) else None
                if kept is None or (n.header, n.footer, n.stat) != (kept.header, kept.footer, kept.stat):
                    yield DirRec(path, _chunk_list(db, n.header), _chunk_list(db, n.footer), kept is not None, n.stat)
                stack.append((path, tree.diff_entries(db, n, kept or EMPTY_DIR)))
                break
            if n is None:
                yield DeleteRec(path)
            elif isinstance(n, FileNode):
                etag = etags.lookup(db, repo, [n.hash])[0] or None
                yield FileRec(path, list(tree.file_chunks(db, n)), n.executable, n.stat, etag)
            elif isinstance(n, SpecialNode):
                yield SpecialRec(path, n)
            else:
                yield LinkRec(path, n.target, n.stat)
        else:
            stack.pop()


def _chunk_list(db, f: FileNode | None) -> list[ChunkRef] | None:
    return None if f is None else list(tree.file_chunks(db, f))


def _chunks_of(store: EngineCore, rec: Record, seen: set[bytes], objects: bool, out: _Frames) -> None:
    """Adds the chunks `rec` refers to that the dump does not hold yet."""
    if isinstance(rec, FileRec):
        refs = rec.chunks
    elif isinstance(rec, DirRec):
        refs = (rec.header or []) + (rec.footer or [])
    else:
        return
    new = []
    for r in refs:
        if r.hash not in seen:
            seen.add(r.hash)
            new.append(r)
    located = [(r.hash, r.size, store.location(r.hash)) for r in new]
    if not objects:
        out.add_all(ChunkRec(h, size, loc=loc) for h, size, loc in located)
        return
    try:
        for (h, size, _), data in zip(located, store.chunks.reader.read_range(located), strict=True):
            out.add(ChunkRec(h, size, data=bytes(data)))
    except (CorruptPack, ObjectNotFound) as e:
        raise DataLoss(f"extract stopped: {e}") from None


class _Frames:
    def __init__(self):
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, rec: Record) -> None:
        payload = _encode(rec)
        self._parts += [_FRAME.pack(len(payload), zlib.crc32(payload)), payload]
        self._size += _FRAME.size + len(payload)

    def add_all(self, recs) -> None:
        for rec in recs:
            self.add(rec)

    def full(self) -> bool:
        return self._size >= _PIECE

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        return data


# -- restore -------------------------------------------------------------------------------------


def restore(store: EngineCore, source: BinaryIO) -> RestoreResult:
    with store.exclusively():
        return _Restore(store, source).run()


class _Restore:
    def __init__(self, store: EngineCore, source: BinaryIO):
        self.store = store
        self.db = store.db
        self.src = _Reader(source)
        self.result = RestoreResult()
        self.repos: dict[str, Repo] = {}
        self.commits: dict[tuple[str, str], Commit] = {}  # rebuilt, in dump order
        self.branches: list[Branch] = []
        self.chunks: dict[bytes, ChunkRef] = {}  # the dump's chunk id -> ours
        self.packs: set[bytes] = set()  # packs known to exist (a dump without objects)
        self.same_seed = False  # whether chunk ids in the dump are ours too
        self.current: Commit | None = None  # the commit whose tree changes are being read
        self.changes: dict[str, Change] = {}
        self.tree = EMPTY_DIR
        self.auth: AuthRec | None = None

    def run(self) -> RestoreResult:
        if self.store.index.repos():
            raise FailedPrecondition("restore needs an empty store, and this one has repos: use a new PFS_HOME")
        if self.src.read(len(MAGIC)) != MAGIC:
            raise InvalidArgument("not a pfs dump: it does not start with the PFSDUMP header")
        info = self.src.record()
        if not isinstance(info, Info):
            raise InvalidArgument("corrupt dump: it does not start with its info record")
        if info.format > FORMAT:
            raise InvalidArgument(f"dump format {info.format} is newer than this pfs reads ({FORMAT})")
        self.same_seed = info.seed_check == seed_check(self.store.config.seed)
        if not info.objects and not self.same_seed:
            raise FailedPrecondition(
                "this dump holds no objects, so only the store it was extracted from (the same "
                "store.json and object store, with a new index) can restore it"
            )
        with self.store.staging() as staging:
            end = self._replay(staging)
            staging.flush()
            self._check(end)
            # Auth first: should the rest fail, no repo is left open without its ACL, and a store
            # with no repos can be restored into again.
            self._restore_auth()
            self.store.index.restore(list(self.repos.values()), list(self.commits.values()), self.branches)
        self.result.repos, self.result.commits = len(self.repos), len(self.commits)
        self.result.branches = len(self.branches)
        return self.result

    def _replay(self, staging: Staging) -> EndRec:
        while True:
            rec = self.src.record()
            if rec is None:
                raise InvalidArgument(f"the dump ends early (truncated?): no end record after {self.src.offset} bytes")
            if isinstance(rec, EndRec):
                self._finish_commit()
                if self.src.read(1):
                    raise InvalidArgument(f"corrupt dump: data after its end at byte {self.src.offset}")
                return rec
            if isinstance(rec, RepoRec):
                names.repo_name(rec.repo.name)
                self.repos[rec.repo.name] = rec.repo
            elif isinstance(rec, CommitRec):
                self._finish_commit()
                self._start_commit(rec.commit)
            elif isinstance(rec, ChunkRec):
                self._chunk(rec, staging)
            elif isinstance(rec, BranchRec):
                self._finish_commit()  # the commits come before the branches
                self._branch(rec.branch)
            elif isinstance(rec, AuthRec):
                self._finish_commit()
                self.auth = rec
            elif isinstance(rec, Info):
                raise InvalidArgument(f"corrupt dump: a second info record at byte {self.src.offset}")
            else:
                self._change(rec)

    def _chunk(self, rec: ChunkRec, staging: Staging) -> None:
        if rec.data is not None:
            if len(rec.data) != rec.size:
                raise InvalidArgument(f"corrupt dump: chunk {rec.hash.hex()} is not {rec.size} bytes")
            ref = staging.put(rec.data)
            if self.same_seed and ref.hash != rec.hash:
                raise InvalidArgument(f"corrupt dump: chunk {rec.hash.hex()} does not match its id")
            self.result.bytes += rec.size
        elif rec.loc is not None:
            if rec.loc.pack not in self.packs:
                if not self.store.objects.exists(pack_key(rec.loc.pack)):
                    raise FailedPrecondition(
                        f"pack {rec.loc.pack.hex()} of the dump is not in {self.store.objects.url}"
                    )
                self.packs.add(rec.loc.pack)
            self.store.record_locations([(rec.hash, rec.loc)])
            ref = ChunkRef(rec.hash, rec.size)
        else:
            raise InvalidArgument(f"corrupt dump: chunk {rec.hash.hex()} has neither data nor place")
        self.chunks[rec.hash] = ref
        self.result.chunks += 1

    def _start_commit(self, c: Commit) -> None:
        if c.repo not in self.repos:
            raise InvalidArgument(f"corrupt dump: commit {c.id} of repo {c.repo}, which it lacks")
        if not names.COMMIT_ID.fullmatch(c.id) or (c.repo, c.id) in self.commits:
            raise InvalidArgument(f"corrupt dump: bad or repeated commit id {c.id!r}")
        parent = self.commits.get((c.repo, c.parent)) if c.parent else None
        if c.parent and parent is None:
            raise InvalidArgument(f"corrupt dump: commit {c.id} comes before its parent {c.parent}")
        self.current = c
        self.tree = parent.tree if parent else EMPTY_DIR
        self.changes = {}

    def _change(self, rec: Change) -> None:
        """Note a change of the current commit's tree; nodes are made when it is applied."""
        if self.current is None:
            raise InvalidArgument(f"corrupt dump: a file change before any commit at byte {self.src.offset}")
        path = names.path(rec.path)
        if not path:
            raise InvalidArgument(f"corrupt dump: a change to the root at byte {self.src.offset}")
        if isinstance(rec, FileRec):
            rec = msgspec.structs.replace(rec, chunks=self._refs(rec.chunks))
        elif isinstance(rec, DirRec):
            header, footer = (None if r is None else self._refs(r) for r in (rec.header, rec.footer))
            rec = msgspec.structs.replace(rec, header=header, footer=footer)
            if rec.keep:  # the directory as the changes so far leave it, with a new frame
                self._apply()
                if not isinstance(tree.lookup(self.db, self.tree, path), DirNode):
                    raise InvalidArgument(f"corrupt dump: {path} is not a directory to keep")
        self.changes[path] = rec

    def _refs(self, refs: list[ChunkRef]) -> list[ChunkRef]:
        try:
            return [self.chunks[r.hash] for r in refs]
        except KeyError as e:
            raise InvalidArgument(f"corrupt dump: chunk {e.args[0].hex()} is used before it is given") from None

    def _apply(self) -> None:
        """Write the changes read so far into the tree of the current commit."""
        if not self.changes:
            return
        with self.store.index.mutation(sync=False) as v:
            changes = {path: self._node(v.txn, path, rec) for path, rec in self.changes.items()}
            self.tree = tree.apply(v.txn, self.tree, changes)
        self.changes = {}

    def _node(self, txn, path: str, rec: Change) -> Node | None:
        stat = rec.node.stat if isinstance(rec, SpecialRec) else getattr(rec, "stat", None)
        if stat is not None and stat.xattrs:
            names.xattrs(stat.xattrs)  # checked as a write's are
        if isinstance(rec, FileRec):
            node = tree.make_file(txn, rec.chunks, rec.executable)
            if rec.etag is not None:  # keyed by the content hash this store gave it
                assert self.current is not None  # (changes come after their commit)
                etags.record(txn, self.current.repo, node.hash, rec.etag)
            return msgspec.structs.replace(node, stat=rec.stat)
        if isinstance(rec, SpecialRec):
            return rec.node
        if isinstance(rec, LinkRec):
            return SymlinkNode(names.link_target(rec.target), rec.stat)
        if isinstance(rec, DeleteRec):
            return None
        d = tree.lookup(txn, self.tree, path) if rec.keep else EMPTY_DIR
        if not isinstance(d, DirNode):
            raise InvalidArgument(f"corrupt dump: {path} is not a directory to keep")
        return msgspec.structs.replace(
            d,
            header=None if rec.header is None else tree.make_file(txn, rec.header),
            footer=None if rec.footer is None else tree.make_file(txn, rec.footer),
            stat=rec.stat,
        )

    def _finish_commit(self) -> None:
        if self.current is not None:
            self._apply()
            c = msgspec.structs.replace(self.current, tree=self.tree)
            self.commits[(c.repo, c.id)] = c
            self.current = None

    def _branch(self, b: Branch) -> None:
        if b.repo not in self.repos:
            raise InvalidArgument(f"corrupt dump: branch {b.name} of repo {b.repo}, which it lacks")
        names.branch_name(b.name)
        if b.head is not None and (b.repo, b.head) not in self.commits:
            raise InvalidArgument(f"corrupt dump: branch {b.repo}@{b.name} has no commit {b.head}")
        self.branches.append(b)

    def _restore_auth(self) -> None:
        """The dump's ACLs and admins, and its tokens beside any this store has (its admins keep
        theirs, and become admins of the restored store too)."""
        rec = self.auth
        if rec is None or rec.admins is None:
            return
        for repo in rec.acls:
            names.repo_name(repo)
        records = AuthRecords(self.db)
        config, _, _ = records.load()
        if config is None:  # the dump's admins alone could then use it, and no one here could finish
            raise FailedPrecondition(
                "this dump has auth records, and auth is not active here: activate it first "
                "(pfs auth activate --admins=YOU), then restore; your admins stay admins"
            )
        admins = sorted(set(rec.admins) | set(config.admins if config else ()))
        records.write(config=AuthConfig(admins), tokens=rec.tokens, acls=rec.acls)
        self.result.auth = True

    def _check(self, end: EndRec) -> None:
        """What cannot be checked as records arrive: links between commits and branches."""
        for c in self.commits.values():
            for kid in c.children:
                child = self.commits.get((c.repo, kid))
                if child is None or child.parent != c.id:
                    raise InvalidArgument(f"corrupt dump: commit {c.id} lists a child {kid} it lacks")
            for p in c.provenance:
                if (p.repo, p.id) not in self.commits:
                    raise InvalidArgument(f"corrupt dump: commit {c.id} has unknown provenance {p.id}")
        known = {(b.repo, b.name) for b in self.branches}
        for b in self.branches:
            for bp in b.provenance:
                if (bp.repo, bp.name) not in known:
                    raise InvalidArgument(f"corrupt dump: branch {b.name} has unknown provenance {bp.name}")
        counts = (len(self.repos), len(self.commits), len(self.branches), self.result.chunks)
        if counts != (end.repos, end.commits, end.branches, end.chunks):
            raise InvalidArgument("corrupt dump: its end record does not match what it holds")


class _Reader:
    def __init__(self, source: BinaryIO):
        self.source = source
        self.offset = 0

    def read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n and (piece := self.source.read(n - got)):
            parts.append(piece)
            got += len(piece)
        self.offset += got
        return b"".join(parts)

    def record(self) -> Record | None:
        """The next record, or None at the end of the stream."""
        at = self.offset
        head = self.read(_FRAME.size)
        if not head:
            return None
        if len(head) < _FRAME.size:
            raise InvalidArgument(f"the dump ends early (truncated?) at byte {self.offset}")
        n, crc = _FRAME.unpack(head)
        if n > _MAX_FRAME:
            raise InvalidArgument(f"corrupt dump at byte {at}: a record of {n} bytes")
        payload = self.read(n)
        if len(payload) < n:
            raise InvalidArgument(f"the dump ends early (truncated?) at byte {self.offset}")
        if zlib.crc32(payload) != crc:
            raise InvalidArgument(f"corrupt dump at byte {at}: checksum mismatch")
        try:
            return _decode(payload)
        except msgspec.DecodeError as e:
            raise InvalidArgument(f"corrupt dump at byte {at}: {e}") from None
