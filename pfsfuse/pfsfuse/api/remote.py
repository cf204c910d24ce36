"""The API over the daemon's HTTP socket (unix or TCP).

A client that can read the store's config (the owner of PFS_HOME on the daemon's host, or any
client given a copy of it in PFS_STORE_DIR, as worker pods are) reads file data straight from the
object store and verifies each chunk itself; any other client streams the bytes through the daemon.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlencode

import msgspec

from pfsfuse import chunks
from pfsfuse.api import wire
from pfsfuse.api.client import Client
from pfsfuse.api.transport import Token, Transport
from pfsfuse.api.types import (
    NAMES_MAX,
    DiffResult,
    DirNames,
    FileInfo,
    GcResult,
    Put,
    ReadPlan,
    RepoInfo,
    RestoreResult,
    Traffic,
    WriteOp,
    WriteResult,
    located_bytes,
)
from pfsfuse.chunks.location import ChunkLoc
from pfsfuse.home import Home
from pfsfuse.metadata.errors import DataLoss, Unavailable
from pfsfuse.metadata.records import Branch, BranchRef, ChunkRef, Commit, CommitRef, Node, Page

if TYPE_CHECKING:
    from pfsfuse.chunks import ChunkStore

_PIECE = 1 << 20
_HEADER = msgspec.msgpack.Encoder()
log = logging.getLogger(__name__)


def _plain_data(op: Put) -> bool:
    """Whether a Put's data is stored as it is (not split, framed or fetched by the daemon)."""
    has_data = op.stream is not None or op.local is not None
    return has_data and op.url is None and op.split is None and op.frame is None and op.chunks is None


class RemoteClient(Client):
    def __init__(self, address: str, home: Home | None = None, token: Token = None):
        """`address` is `unix:/path/to/pfs.sock`, `host:port` or `https://host:port`. `home` is
        the daemon's PFS_HOME when it is on this host, or a directory holding a copy of its
        store.json (PFS_STORE_DIR), which allows reading chunks directly (and, over TCP, writing
        them: PFS_DIRECT_WRITES=0 sends the bytes to the daemon instead). `token` identifies the
        caller when the daemon has auth activated."""
        self.address = address
        self.token = token
        self.unix = address.startswith("unix:")
        self._http = Transport(address, token=token)
        self._home = home

    @functools.cached_property
    def chunk_store(self) -> ChunkStore | None:
        """The object store, if this client may read it directly. Opened on first use: most
        commands read no file data."""
        try:
            cfg = self._home.config() if self._home is not None else None
        except (OSError, msgspec.DecodeError):
            cfg = None
        if cfg is None:
            return None
        from pfsfuse.chunks import ChunkStore, StorageError, cache_for, open_store
        from pfsfuse.chunks.backends import credentials_in

        assert self._home is not None
        for name, value in credentials_in(self._home.path).items():
            os.environ.setdefault(name, value)  # the SDKs read them from there
        try:
            return ChunkStore(open_store(cfg.storage), cfg.seed, cache=cache_for(cfg.storage))
        except (StorageError, ValueError):
            return None  # no credentials for the store here: data comes through the daemon

    def close(self) -> None:
        self._http.close()
        store = self.__dict__.get("chunk_store")  # only if it was opened
        if store is not None:
            store.reader.close()
            store.objects.close()

    # -- transport ----------------------------------------------------------------------------

    def _rpc(self, method: str, **args):
        data = self._http.call("POST", f"/rpc/{method}", wire.encode_args(method, args), wire.MSGPACK)
        return msgspec.msgpack.decode(data, type=wire.hints(method)["return"])

    def _stream(self, url: str, args: wire.Query) -> Iterator[bytes]:
        with self._http.stream(url, wire.query(args)) as pieces:
            yield from pieces

    # -- repos --------------------------------------------------------------------------------

    def create_repo(self, name: str, description: str = "", update: bool = False) -> RepoInfo:
        return self._rpc("create_repo", name=name, description=description, update=update)

    def inspect_repo(self, name: str) -> RepoInfo:
        return self._rpc("inspect_repo", name=name)

    def list_repo(self) -> list[RepoInfo]:
        return self._rpc("list_repo")

    def delete_repo(self, name: str, force: bool = False) -> None:
        return self._rpc("delete_repo", name=name, force=force)

    # -- commits ------------------------------------------------------------------------------

    def start_commit(
        self,
        repo: str,
        branch: str | None = None,
        parent: str | None = None,
        description: str = "",
        provenance: list[CommitRef] | None = None,
    ) -> Commit:
        return self._rpc(
            "start_commit",
            repo=repo,
            branch=branch,
            parent=parent,
            description=description,
            provenance=provenance,
        )

    def finish_commit(self, repo: str, ref: str, description: str | None = None) -> Commit:
        return self._rpc("finish_commit", repo=repo, ref=ref, description=description)

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return self._rpc("inspect_commit", repo=repo, ref=ref)

    def list_commit(
        self, repo: str, ref: str | None = None, number: int | None = None, since: str | None = None
    ) -> list[Commit]:
        return self._rpc("list_commit", repo=repo, ref=ref, number=number, since=since)

    def delete_commit(self, repo: str, ref: str) -> list[CommitRef]:
        return self._rpc("delete_commit", repo=repo, ref=ref)

    def subscribe_commit(
        self, repo: str, branch: str, since: str | None = None, new_only: bool = False
    ) -> Iterator[Commit]:
        args = wire.SubscribeQuery(repo=repo, branch=branch, since=since or None, new_only=new_only)
        dec = msgspec.json.Decoder(Commit)
        pending = b""
        for piece in self._stream("/subscribe", args):
            pending += piece
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield dec.decode(line)

    # -- branches -----------------------------------------------------------------------------

    def create_branch(
        self,
        repo: str,
        name: str,
        head: str | None = None,
        provenance: list[BranchRef] | None = None,
    ) -> Branch:
        return self._rpc("create_branch", repo=repo, name=name, head=head, provenance=provenance)

    def inspect_branch(self, repo: str, name: str) -> Branch:
        return self._rpc("inspect_branch", repo=repo, name=name)

    def list_branch(self, repo: str) -> list[Branch]:
        return self._rpc("list_branch", repo=repo)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        return self._rpc("delete_branch", repo=repo, name=name, force=force)

    # -- files --------------------------------------------------------------------------------

    def write_files(self, repo: str, ref: str, ops: Iterable[WriteOp], listings: bool = False) -> WriteResult:
        if not self.unix and os.environ.get("PFS_DIRECT_WRITES", "1") != "0" and self.chunk_store is not None:
            ops = self._store_directly(ops)
        params = urlencode(wire.query(wire.WriteQuery(repo=repo, ref=ref, listings=listings)))
        frames = self._frames(ops)
        body = _gathered(frames) if isinstance(ops, list) and all(map(_at_hand, ops)) else frames
        data = self._http.call("POST", f"/write?{params}", body)
        return msgspec.json.decode(data, type=WriteResult)

    def _store_directly(self, ops: Iterable[WriteOp]) -> list[WriteOp]:
        """The ops with the data of each plain Put cut, hashed and stored in packs here, before
        the request: the daemon gets only where the chunks lie, signed. If storing fails, no
        request is made, so nothing is committed (the packs stored are garbage)."""
        store = self.chunk_store
        assert store is not None
        out: list[WriteOp] = []
        files: list[tuple[int, list[ChunkRef]]] = []  # index in `out`, the file's chunks
        where: dict[bytes, ChunkLoc] = {}
        try:
            with store.writer() as writer:
                for op in ops:
                    if isinstance(op, Put) and _plain_data(op):
                        refs = []
                        with open(op.local, "rb") if op.local is not None else contextlib.nullcontext(op.stream) as f:
                            for piece in store.chunker.cut(f):
                                h = store.hash(piece)
                                refs.append(ChunkRef(h, len(piece)))
                                where.update(writer.add(h, piece))
                        files.append((len(out), refs))
                    out.append(op)
                where.update(writer.flush())
        except chunks.StorageError as e:
            raise Unavailable(f"cannot store chunks in the object store: {e}") from None
        for i, refs in files:
            located = [(r, where[r.hash]) for r in refs]
            op = out[i]
            assert isinstance(op, Put)
            proof = store.sign(located_bytes(located))
            out[i] = msgspec.structs.replace(op, local=None, stream=None, chunks=located, proof=proof)
        return out

    def _frames(self, ops: Iterable[WriteOp]) -> Iterator[bytes]:
        for op in ops:
            if not isinstance(op, Put) or op.url is not None or op.chunks is not None:
                yield wire.frame(_HEADER.encode(wire.OpHeader(op)))
            elif op.local is not None and self.unix:
                # The daemon shares this host and reads the file itself: no bytes on the socket.
                local = msgspec.structs.replace(op, local=os.path.abspath(op.local))
                yield wire.frame(_HEADER.encode(wire.OpHeader(local)))
            else:
                bare = msgspec.structs.replace(op, local=None, stream=None)
                yield wire.frame(_HEADER.encode(wire.OpHeader(bare, data=True)))
                stream = op.stream if op.local is None else open(op.local, "rb")
                try:
                    while piece := stream.read(_PIECE):
                        yield wire.frame(piece)
                finally:
                    if op.local is not None:
                        stream.close()
                yield wire.END

    def get_file(self, repo: str, ref: str, path: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        from pfsfuse.metadata import glob  # trees and patterns: loaded by the verbs that read files

        # A glob's files are concatenated by the daemon, which walks the tree as it sends them.
        if self.chunk_store is not None and not glob.is_pattern(path):
            return self._read_direct(repo, ref, self.read_plan(repo, ref, path), offset, length)
        args = wire.GetQuery(repo=repo, ref=ref, path=path, offset=offset, length=length)
        return self._stream("/get", args)

    def _read_direct(self, repo: str, ref: str, plan: ReadPlan, offset: int, length: int | None) -> Iterator[bytes]:
        store = self.chunk_store
        assert store is not None
        located = [(c.hash, c.size, loc) for c, loc in plan.chunks]
        done = 0
        try:
            for piece in store.reader.read_moving(located, self.chunk_locations, offset, length):
                done += len(piece)
                yield piece
            return
        except (chunks.ObjectNotFound, chunks.CorruptChunk) as e:
            raise DataLoss(f"{plan.info.path}: {e}") from None
        except chunks.StorageError as e:
            # Unreachable or refused (credentials): the daemon serves the rest, from where we are.
            log.warning("reading the object store directly failed (%s): reading through the daemon", e)
        rest = None if length is None else length - done
        if rest == 0:
            return
        args = wire.GetQuery(repo=repo, ref=ref, path=plan.info.path, offset=offset + done, length=rest)
        yield from self._stream("/get", args)

    def read_plan(self, repo: str, ref: str, path: str) -> ReadPlan:
        return self._rpc("read_plan", repo=repo, ref=ref, path=path)

    def read_plans(
        self, repo: str, ref: str, path: str = "", start_after: str | None = None, limit: int | None = None
    ) -> list[ReadPlan]:
        return self._rpc("read_plans", repo=repo, ref=ref, path=path, start_after=start_after, limit=limit)

    def plan_bytes(
        self, repo: str, ref: str, plan: ReadPlan, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        if self.chunk_store is not None:
            return self._read_direct(repo, ref, plan, offset, length)
        return self.get_file(repo, ref, plan.info.path, offset, length)

    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo:
        return self._rpc("inspect_file", repo=repo, ref=ref, path=path)

    def list_file(
        self,
        repo: str,
        ref: str,
        path: str = "",
        start_after: str | None = None,
        limit: int | None = None,
        history: int = 0,
    ) -> list[FileInfo]:
        return self._rpc(
            "list_file",
            repo=repo,
            ref=ref,
            path=path,
            start_after=start_after,
            limit=limit,
            history=history,
        )

    def walk_file(
        self, repo: str, ref: str, path: str = "", start_after: str | None = None, limit: int | None = None
    ) -> list[FileInfo]:
        return self._rpc("walk_file", repo=repo, ref=ref, path=path, start_after=start_after, limit=limit)

    def glob_file(self, repo: str, ref: str, pattern: str) -> list[FileInfo]:
        return self._rpc("glob_file", repo=repo, ref=ref, pattern=pattern)

    def glob_nodes(self, repo: str, ref: str, pattern: str) -> list[tuple[str, Node]]:
        return self._rpc("glob_nodes", repo=repo, ref=ref, pattern=pattern)

    def etags(self, repo: str, hashes: list[str]) -> list[str]:
        return self._rpc("etags", repo=repo, hashes=hashes)

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
        return self._rpc(
            "diff_file",
            new_repo=new_repo,
            new_ref=new_ref,
            new_path=new_path,
            old_repo=old_repo,
            old_ref=old_ref,
            old_path=old_path,
            shallow=shallow,
        )

    # -- immutable objects by hash -------------------------------------------------------------

    def dir_entries(
        self, root: bytes, start_after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Node]]:
        return self._rpc("dir_entries", root=root, start_after=start_after, limit=limit)

    def dir_names(self, root: bytes, start_after: str | None = None, limit: int = NAMES_MAX) -> DirNames:
        return self._rpc("dir_names", root=root, start_after=start_after, limit=limit)

    def dir_child(self, root: bytes, name: str) -> Node | None:
        return self._rpc("dir_child", root=root, name=name)

    def tree_pages(self, hashes: list[bytes]) -> list[Page]:
        return self._rpc("tree_pages", hashes=hashes)

    def chunk_list(self, file_hash: bytes) -> list[ChunkRef]:
        return self._rpc("chunk_list", file_hash=file_hash)

    def chunk_locations(self, hashes: list[bytes]) -> list[ChunkLoc]:
        return self._rpc("chunk_locations", hashes=hashes)

    def read_chunk(self, chunk: ChunkRef) -> bytes:
        args = wire.ChunkQuery(hash=chunk.hash.hex(), size=chunk.size)
        return b"".join(self._stream("/chunk", args))

    # -- admin --------------------------------------------------------------------------------

    def fsck(self) -> list[str]:
        return self._rpc("fsck")

    def version(self) -> str:
        return self._rpc("version")

    def garbage_collect(self, dry_run: bool = False, orphan_age: float = 3600.0) -> GcResult:
        return self._rpc("garbage_collect", dry_run=dry_run, orphan_age=orphan_age)

    def extract(self, objects: bool = True) -> Iterator[bytes]:
        return self._stream("/extract", wire.ExtractQuery(objects=objects))

    def restore(self, dump_file: BinaryIO) -> RestoreResult:
        pieces = iter(lambda: dump_file.read(_PIECE), b"")
        return msgspec.json.decode(self._http.call("POST", "/restore", pieces), type=RestoreResult)

    def traffic(self) -> Traffic:
        """The file data bytes the daemon served and received for its clients (admins only)."""
        return msgspec.json.decode(self._http.call("GET", "/traffic"), type=Traffic)

    def shutdown(self) -> None:
        self._http.call("POST", "/shutdown", b"")


def _at_hand(op: WriteOp) -> bool:
    """Whether what `op` sends is in memory or in a file here, not in a stream that may come
    slowly (stdin, a socket): the request need not go piece by piece as the stream yields."""
    return not isinstance(op, Put) or op.stream is None or isinstance(op.stream, io.BytesIO)


def _gathered(pieces: Iterator[bytes]) -> bytes | Iterator[bytes]:
    """`pieces` as one body if they come to less than _PIECE bytes (a mount's flush: the
    request then goes in one write, with its length, and the daemon reads it in one), else
    streamed as before."""
    head: list[bytes] = []
    size = 0
    for piece in pieces:
        head.append(piece)
        size += len(piece)
        if size >= _PIECE:
            return itertools.chain(head, pieces)
    return b"".join(head)
