"""The daemon's HTTP API: a Starlette app on trio, translating requests into `Store` calls.

Store calls are synchronous (RocksDB, hashing, disk), so every one runs in a worker thread and the
trio loop only moves bytes. Errors are translated at this boundary into a status and a one-line
message; anything unexpected is logged with its traceback and reported as an internal error.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pfsfuse.api import wire
from pfsfuse.api.types import Put
from pfsfuse.metadata.records import ChunkRef
from pfsfuse.metadata.errors import InvalidArgument, PfsError
from pfsfuse.store import Store

log = logging.getLogger("pfsfuse.server")
_PIECE = 1 << 20


def _error(e: BaseException) -> Response:
    if not isinstance(e, PfsError):
        log.error("internal error", exc_info=e)
        e = PfsError(f"internal error: {type(e).__name__}: {e}")
    return Response(wire.error_body(e), status_code=e.status, media_type="application/json")


async def _in_thread(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class _BlockingBody:
    """The request body as a blocking byte source for a worker thread, fed by the trio side."""

    def __init__(self, receive: trio.MemoryReceiveChannel):
        self._receive = receive
        self._buf = memoryview(b"")
        self._eof = False

    def _fill(self) -> bool:
        while not self._buf and not self._eof:
            try:
                self._buf = memoryview(trio.from_thread.run(self._receive.receive))
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

    def __init__(self, body: _BlockingBody):
        self._body = body
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
        return len(piece)


class _RawBody(io.RawIOBase):
    """A request body as a file, for a worker thread."""

    def __init__(self, body: _BlockingBody):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        piece = self._body.read(len(b))
        b[: len(piece)] = piece
        return len(piece)


async def _pump(request: Request, send: trio.MemorySendChannel) -> None:
    """Feed a request body to a worker thread in pieces of about _PIECE bytes."""
    async with send:
        buf = bytearray()
        async for piece in request.stream():
            buf += piece
            if len(buf) >= _PIECE:
                await send.send(bytes(buf))
                buf.clear()
        if buf:
            await send.send(bytes(buf))


async def _pieces(pieces):
    """A blocking iterator of bytes as an async one, each step in a worker thread."""
    while (piece := await _in_thread(next, pieces, None)) is not None:
        yield piece


_HEADER = msgspec.msgpack.Decoder(wire.OpHeader)


async def _consume(request: Request, fn) -> Response:
    """`fn(body)` in a thread, `body` reading the request's body as it arrives; its result as
    JSON, or the error."""
    send, receive = trio.open_memory_channel(4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump, request, send)
        try:
            result = Response(msgspec.json.encode(await _in_thread(fn, _BlockingBody(receive))),
                              media_type="application/json")
        except Exception as e:  # noqa: BLE001 - translated at the boundary
            result = _error(e)
        # Drain what the client still sends so that it gets to read our answer.
        async with receive:
            async for _ in receive:
                pass
    return result


def _ops(body: _BlockingBody, trusted: bool):
    while not body.at_end():
        header = _HEADER.decode(body.read_exactly(wire.read_u32(body.read_exactly)))
        op = header.op
        if isinstance(op, Put):
            if op.local is not None and not trusted:
                raise InvalidArgument(
                    f"{op.local}: local paths are only accepted over the daemon's unix socket"
                )
            if header.data:
                op = msgspec.structs.replace(op, stream=io.BufferedReader(_FramedFile(body), _PIECE))
        yield op


def make_app(
    store: Store, shutdown: Callable[[], None], *, trusted: bool, routes: list[Route] = ()
) -> Starlette:
    """`trusted` is true for the unix socket: only PFS_HOME's owner can reach it, so its clients
    may name files on this host for the daemon to read."""

    async def rpc(request: Request) -> Response:
        method = request.path_params["method"]
        if method not in wire.RPC:
            return _error(InvalidArgument(f"unknown API method {method!r}"))
        try:
            args = wire.decode_args(method, await request.body())
            result = await _in_thread(getattr(store, method), **args)
        except Exception as e:  # noqa: BLE001 - translated at the boundary
            return _error(e)
        return Response(msgspec.json.encode(result), media_type="application/json")

    async def write(request: Request) -> Response:
        q = request.query_params
        repo, ref = q.get("repo", ""), q.get("ref", "")
        return await _consume(request, lambda body: store.write_files(repo, ref, _ops(body, trusted)))

    async def get(request: Request) -> Response:
        q = request.query_params
        try:
            repo, ref, path = q["repo"], q["ref"], q.get("path", "")
            offset = int(q.get("offset", 0))
            length = int(q["length"]) if "length" in q else None
            size, pieces = await _in_thread(store.read, repo, ref, path, offset, length)
        except (KeyError, ValueError):
            return _error(InvalidArgument("get needs repo, ref and path; offset/length integers"))
        except Exception as e:  # noqa: BLE001
            return _error(e)
        # The size of a glob's output is not known up front: then the body is chunked.
        headers = {} if size is None else {"content-length": str(size)}
        return StreamingResponse(_pieces(pieces), media_type="application/octet-stream", headers=headers)

    async def extract(request: Request) -> Response:
        try:
            pieces = await _in_thread(store.extract, request.query_params.get("objects") != "0")
        except Exception as e:  # noqa: BLE001
            return _error(e)
        return StreamingResponse(_pieces(pieces), media_type="application/octet-stream")

    async def restore(request: Request) -> Response:
        return await _consume(request, lambda body: store.restore(io.BufferedReader(_RawBody(body), _PIECE)))

    async def chunk(request: Request) -> Response:
        q = request.query_params
        try:
            ref = ChunkRef(bytes.fromhex(q["hash"]), int(q["size"]))
        except (KeyError, ValueError):
            return _error(InvalidArgument("chunk needs a hex hash and an integer size"))
        try:
            data = await _in_thread(store.read_chunk, ref)
        except Exception as e:  # noqa: BLE001
            return _error(e)
        # Chunks never change: let any HTTP cache keep them.
        headers = {"cache-control": "public, max-age=31536000, immutable"}
        return Response(data, media_type="application/octet-stream", headers=headers)

    async def subscribe(request: Request) -> Response:
        q = request.query_params
        cancel = threading.Event()
        try:
            commits = await _in_thread(
                store.subscribe,
                q.get("repo", ""),
                q.get("branch", ""),
                q.get("since") or None,
                q.get("new_only") == "1",
                cancel,
            )
        except Exception as e:  # noqa: BLE001
            return _error(e)

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

    async def stop(request: Request) -> Response:
        shutdown()
        return Response(b"{}", media_type="application/json")

    return Starlette(
        routes=[
            Route("/rpc/{method}", rpc, methods=["POST"]),
            Route("/write", write, methods=["POST"]),
            Route("/chunk", chunk, methods=["GET"]),
            Route("/get", get, methods=["GET"]),
            Route("/subscribe", subscribe, methods=["GET"]),
            Route("/extract", extract, methods=["GET"]),
            Route("/restore", restore, methods=["POST"]),
            Route("/shutdown", stop, methods=["POST"]),
            *routes,
        ]
    )
