"""The daemon's storage API: its routes, each translating a request into a `Store` call.

Store calls are synchronous (RocksDB, hashing, disk), so every one runs in a worker thread and the
trio loop only moves bytes. Every route goes through the front door (`door`), which decodes its
arguments, checks its caller and turns errors into statuses.
"""

from __future__ import annotations

import collections
import functools
import io
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pfsfuse.api import door, wire
from pfsfuse.api.types import Copy, Put, Traffic
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.metadata.records import ChunkRef
from pfsfuse.store import Store

_PIECE = 1 << 20


class Counter:
    """The `Traffic` of one daemon, counted by its routes (on the trio side and in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served = 0
        self._received = 0

    def sent(self, n: int) -> None:
        with self._lock:
            self._served += n

    def got(self, n: int) -> None:
        with self._lock:
            self._received += n

    def traffic(self) -> Traffic:
        with self._lock:
            return Traffic(self._served, self._received)


async def _in_thread(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class _BlockingBody:
    """The request body as a blocking byte source for a worker thread, fed by the trio side."""

    def __init__(self, receive: trio.MemoryReceiveChannel | None, first: list[bytes]):
        self._receive = receive
        self._buf = memoryview(b"")
        self._pieces: collections.deque[bytes] = collections.deque(first)
        self._eof = receive is None  # the whole body was received before the thread started

    def _fill(self) -> bool:
        # Pieces are read where they lie, not joined: a join would copy every byte once more.
        while not self._buf:
            if self._pieces:
                self._buf = memoryview(self._pieces.popleft())
                continue
            if self._eof or self._receive is None:
                break
            try:
                self._pieces.extend(trio.from_thread.run(self._receive.receive))
            except trio.EndOfChannel:
                self._eof = True
        return bool(self._buf)

    def at_end(self) -> bool:
        return not self._fill()

    def read(self, n: int) -> memoryview:
        """Up to n bytes (at least one unless the body ended)."""
        if not self._fill():
            return memoryview(b"")
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_exactly(self, n: int) -> bytes:
        parts, need = [], n
        while need:
            piece = self.read(need)
            if not piece:
                raise InvalidArgument("the put-file request body ended early")
            parts.append(bytes(piece))
            need -= len(piece)
        return b"".join(parts)


class _FramedFile(io.RawIOBase):
    """One file's data frames inside a put-file body."""

    def __init__(self, body: _BlockingBody, counter: Counter):
        self._body = body
        self._counter = counter
        self._left = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._left:
            if self._done:
                return 0
            self._left = wire.read_u32(self._body.read_exactly)
            self._done = self._left == 0
        piece = self._body.read(min(len(b), self._left))
        if not piece:
            raise InvalidArgument("the put-file request body ended early")
        b[: len(piece)] = piece
        self._left -= len(piece)
        self._counter.got(len(piece))
        return len(piece)


class _RawBody(io.RawIOBase):
    """A request body as a file, for a worker thread."""

    def __init__(self, body: _BlockingBody, counter: Counter):
        self._body = body
        self._counter = counter

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        piece = self._body.read(len(b))
        b[: len(piece)] = piece
        self._counter.got(len(piece))
        return len(piece)


async def _first(stream) -> tuple[list[bytes], bool]:
    """The body's first batch of about _PIECE bytes, and whether that is all of it."""
    batch: list[bytes] = []
    size = 0
    async for piece in stream:
        batch.append(piece)
        size += len(piece)
        if size >= _PIECE:
            return batch, False
    return batch, True


async def _pump(stream, send: trio.MemorySendChannel) -> None:
    """Feed the rest of a request body to a worker thread in batches of about _PIECE bytes. The
    pieces are handed over as received: the event loop, which every connection shares, copies
    nothing."""
    async with send:
        while True:
            batch, ended = await _first(stream)
            if batch:
                await send.send(batch)
            if ended:
                return


async def _pieces(pieces, counter: Counter):
    """A blocking iterator of bytes as an async one, each step in a worker thread."""
    while (piece := await _in_thread(next, pieces, None)) is not None:
        counter.sent(len(piece))
        yield piece


_HEADER = msgspec.msgpack.Decoder(wire.OpHeader)


async def _consume(request: Request, fn) -> Response:
    """`fn(body)` in a thread, `body` reading the request's body as it arrives; its result as
    JSON. Its error is raised once the body is drained, for the front door to translate."""
    stream = request.stream().__aiter__()
    # A small body (a file synced through a mount) is read whole first: handing each piece to
    # the thread is a trip through the event loop, which costs milliseconds on a busy machine.
    first, ended = await _first(stream)
    if ended:
        return door.json(await _in_thread(fn, _BlockingBody(None, first)))
    send, receive = trio.open_memory_channel(4)
    failure = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump, stream, send)
        try:
            result = await _in_thread(fn, _BlockingBody(receive, first))
        except Exception as e:  # noqa: BLE001 - raised below, outside the nursery
            failure = e
        # Drain what the client still sends so that it gets to read our answer.
        async with receive:
            async for _ in receive:
                pass
    if failure is not None:
        raise failure
    return door.json(result)


def _ops(body: _BlockingBody, call: door.Call, trusted: bool, counter: Counter):
    while not body.at_end():
        try:
            header = _HEADER.decode(body.read_exactly(wire.read_u32(body.read_exactly)))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise InvalidArgument(f"a put-file operation header is malformed: {e}") from None
        op = header.op
        if isinstance(op, Copy):
            call.check(door.reads(op.src_repo))
        if isinstance(op, Put):
            if op.local is not None and not trusted:
                raise InvalidArgument(f"{op.local}: local paths are only accepted over the daemon's unix socket")
            if header.data:
                op = msgspec.structs.replace(op, stream=io.BufferedReader(_FramedFile(body, counter), _PIECE))
        yield op


# What each call of the storage interface needs of its caller (see `door.Need`). Calls that name
# objects by hash need only a signed-in caller: a hash is learnt by reading a repo that holds it.
ACCESS: dict[str, Callable[[Any], door.Need]] = {
    "create_repo": lambda a: door.owns(a.name) if a.update else door.SIGNED_IN,
    "inspect_repo": lambda a: door.reads(a.name),
    "list_repo": lambda a: door.SIGNED_IN,
    "delete_repo": lambda a: door.owns(a.name),
    "start_commit": lambda a: door.writes(a.repo) + door.reads(*(p.repo for p in a.provenance or ())),
    "finish_commit": lambda a: door.writes(a.repo),
    "inspect_commit": lambda a: door.reads(a.repo),
    "list_commit": lambda a: door.reads(a.repo),
    "delete_commit": lambda a: door.writes(a.repo),
    "create_branch": lambda a: door.writes(a.repo) + door.reads(*(p.repo for p in a.provenance or ())),
    "inspect_branch": lambda a: door.reads(a.repo),
    "list_branch": lambda a: door.reads(a.repo),
    "delete_branch": lambda a: door.writes(a.repo),
    "read_plan": lambda a: door.reads(a.repo),
    "read_plans": lambda a: door.reads(a.repo),
    "inspect_file": lambda a: door.reads(a.repo),
    "list_file": lambda a: door.reads(a.repo),
    "walk_file": lambda a: door.reads(a.repo),
    "glob_file": lambda a: door.reads(a.repo),
    "glob_nodes": lambda a: door.reads(a.repo),
    "etags": lambda a: door.reads(a.repo),
    "diff_file": lambda a: door.reads(a.new_repo, a.old_repo),
    "dir_entries": lambda a: door.SIGNED_IN,
    "dir_names": lambda a: door.SIGNED_IN,
    "dir_child": lambda a: door.SIGNED_IN,
    "tree_pages": lambda a: door.SIGNED_IN,
    "chunk_list": lambda a: door.SIGNED_IN,
    "chunk_locations": lambda a: door.SIGNED_IN,
    "fsck": lambda a: door.ADMIN,
    "garbage_collect": lambda a: door.ADMIN,
    "version": lambda a: door.PUBLIC,
}
# RPCs whose result a msgpack caller gets as the index stores it: read, not decoded and encoded.
_AS_STORED = {"tree_pages": "stored_tree_pages"}
_BY_HASH = {"dir_entries", "dir_names", "dir_child", "tree_pages", "chunk_list", "chunk_locations"}
# Point reads of the index (a few RocksDB gets, no lock) answer in the event loop: handing one to
# a worker thread costs more than it does (about 0.5 ms of the daemon's CPU a call).
_INLINE = {"inspect_repo", "inspect_branch", "inspect_commit"}


def endpoints(
    store: Store,
    shutdown: Callable[[], None],
    *,
    trusted: bool,
    deletable: Callable[[str], None] = lambda repo: None,
    counter: Counter | None = None,
) -> list[door.Endpoint]:
    """The storage API's routes. `trusted` is true for the unix socket: only PFS_HOME's owner can
    reach it, so its clients may name files on this host for the daemon to read. `deletable`
    raises if a repo must not be deleted by a client (a live pipeline's output). `counter`
    counts the file data moved, shared by the daemon's listeners."""
    counter = counter or Counter()

    def rpc(method: str):
        async def handler(call: door.Call):
            if method == "delete_repo":
                deletable(call.args.name)
            served = _AS_STORED.get(method, method) if door.packed(call.request) else method
            fn, kwargs = getattr(store, served), wire.as_kwargs(call.args)
            result = fn(**kwargs) if method in _INLINE else await _in_thread(fn, **kwargs)
            if method == "list_repo":  # a listing shows only the repos the caller may read
                result = [r for r in result if call.may_read(r.name)]
            elif method == "create_repo":
                call.gate.repo_made(call.caller, call.args.name)  # a new repo's creator owns it
            elif method == "delete_repo":
                call.gate.repo_gone(call.args.name)
            return door.answer(call.request, result)

        return door.Endpoint(f"/rpc/{method}", handler, ACCESS[method], wire.schema(method), by_hash=method in _BY_HASH)

    async def write(call: door.Call) -> Response:
        q = call.args
        return await _consume(
            call.request, lambda body: store.write_files(q.repo, q.ref, _ops(body, call, trusted, counter), q.listings)
        )

    async def get(call: door.Call) -> Response:
        q = call.args
        size, pieces = await _in_thread(store.read, q.repo, q.ref, q.path, q.offset, q.length)
        # The size of a glob's output is not known up front: then the body is chunked.
        headers = {} if size is None else {"content-length": str(size)}
        return StreamingResponse(_pieces(pieces, counter), media_type="application/octet-stream", headers=headers)

    async def extract(call: door.Call) -> Response:
        pieces = await _in_thread(store.extract, call.args.objects)
        return StreamingResponse(_pieces(pieces, counter), media_type="application/octet-stream")

    async def restore(call: door.Call) -> Response:
        response = await _consume(
            call.request, lambda body: store.restore(io.BufferedReader(_RawBody(body, counter), _PIECE))
        )
        call.gate.reload()  # the dump's ACLs, admins and tokens, if it had them
        return response

    async def chunk(call: door.Call) -> Response:
        ref = ChunkRef(bytes.fromhex(call.args.hash), call.args.size)
        data = await _in_thread(store.read_chunk, ref)
        counter.sent(len(data))
        # Chunks never change: let any HTTP cache keep them.
        headers = {"cache-control": "public, max-age=31536000, immutable"}
        return Response(data, media_type="application/octet-stream", headers=headers)

    async def subscribe(call: door.Call) -> Response:
        q = call.args
        cancel = threading.Event()
        commits = await _in_thread(store.subscribe, q.repo, q.branch, q.since or None, q.new_only, cancel)

        async def body():
            # The thread waits for commits; it notices `cancel` within a second once abandoned.
            try:
                while True:
                    c = await trio.to_thread.run_sync(next, commits, None, abandon_on_cancel=True)
                    if c is None:
                        return
                    yield msgspec.json.encode(c) + b"\n"
            finally:
                cancel.set()

        return StreamingResponse(body(), media_type="application/x-ndjson")

    async def traffic(call: door.Call) -> Response:
        return door.json(counter.traffic())

    async def stop(call: door.Call) -> Response:
        shutdown()
        return door.json({})

    return [
        *(rpc(method) for method in sorted(wire.RPC)),
        door.Endpoint("/write", write, lambda q: door.writes(q.repo), wire.WriteQuery, query=True),
        door.Endpoint(
            "/chunk", chunk, lambda q: door.SIGNED_IN, wire.ChunkQuery, query=True, method="GET", by_hash=True
        ),
        door.Endpoint("/get", get, lambda q: door.reads(q.repo), wire.GetQuery, query=True, method="GET"),
        door.Endpoint(
            "/subscribe", subscribe, lambda q: door.reads(q.repo), wire.SubscribeQuery, query=True, method="GET"
        ),
        door.Endpoint("/extract", extract, lambda q: door.ADMIN, wire.ExtractQuery, query=True, method="GET"),
        door.Endpoint("/restore", restore, lambda q: door.ADMIN),
        door.Endpoint("/shutdown", stop, lambda q: door.ADMIN),
        door.Endpoint("/traffic", traffic, lambda q: door.ADMIN, method="GET"),
    ]


def make_app(endpoints: list[door.Endpoint], gate: door.Gate) -> Starlette:
    return Starlette(routes=door.routes(endpoints, gate))
