"""The unix socket's HTTP server (pfsfuse.h11serve) with a small app, driven by the project's
client transport and by raw sockets: kept-alive requests, bodies it leaves unread, errors, peers
that break HTTP or go away, and stopping with requests in flight."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pfsfuse import h11serve
from pfsfuse.api.transport import Transport


def _app(release: threading.Event, entered: threading.Event) -> Starlette:
    async def echo(request: Request) -> Response:
        return Response(await request.body())

    async def refuse(request: Request) -> Response:
        return PlainTextResponse("no", status_code=401)  # its body is never read

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug in a route")

    async def pieces(request: Request) -> Response:
        n = int(request.query_params["n"])

        async def gen():
            for i in range(n):
                yield b"%08d" % i * 8192  # 64 KiB a piece

        return StreamingResponse(gen())

    async def slow(request: Request) -> Response:
        entered.set()
        await trio.to_thread.run_sync(release.wait)
        return PlainTextResponse("finished")

    routes = [
        Route("/echo", echo, methods=["POST"]),
        Route("/refuse", refuse, methods=["POST"]),
        Route("/boom", boom),
        Route("/pieces", pieces),
        Route("/slow", slow),
    ]
    return Starlette(routes=routes)


class _Served:
    def __init__(self, path):
        self.path = path
        self.release = threading.Event()  # lets /slow answer
        self.entered = threading.Event()  # /slow has started
        self._stop = threading.Event()
        self._started = threading.Event()
        self.stopped_after: float | None = None  # seconds from the stop to serve's return
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(h11serve.serve, _app(self.release, self.entered), self.path, stop)
            self._started.set()
            await trio.to_thread.run_sync(self._stop.wait)
            t = time.monotonic()
            stop.set()
        self.stopped_after = time.monotonic() - t

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10), "the server did not start"

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the server did not stop"

    def raw(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(self.path))
        return s


@contextlib.contextmanager
def served(tmp_path):
    server = _Served(tmp_path / "s.sock")
    server.start()
    try:
        yield server
    finally:
        server.release.set()
        server.stop()


def _still_serving(server: _Served) -> None:
    t = Transport(f"unix:{server.path}", timeout=10)
    try:
        assert t.call("POST", "/echo", b"still serving") == b"still serving"
    finally:
        t.close()


def _read_answer(s: socket.socket) -> tuple[bytes, bytes]:
    """(status line, body) of one answer with a content length."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = s.recv(65536)
        assert more, f"closed before the head: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        more = s.recv(65536)
        assert more, "closed mid-body"
        body += more
    return head.split(b"\r\n")[0], body


def test_requests_on_a_kept_alive_connection_with_bodies_of_every_framing(tmp_path):
    with served(tmp_path) as server:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        t = Transport(f"unix:{server.path}", timeout=10)
        try:
            big = os.urandom(5 << 20)
            assert t.call("POST", "/echo", big) == big
            assert t.call("POST", "/echo", iter([b"str", b"", b"eamed" * 100_000])) == b"str" + b"eamed" * 100_000
            assert t.call("POST", "/echo", b"") == b""
            with t.stream("/pieces", {"n": "40"}) as answer:
                got = b"".join(answer)
            assert got == b"".join(b"%08d" % i * 8192 for i in range(40))
        finally:
            t.close()


def test_a_body_left_unread_and_a_failing_route_leave_the_connection_usable(tmp_path):
    with served(tmp_path) as server, server.raw() as s:
        body = b"x" * 300_000
        s.sendall(b"POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert _read_answer(s) == (b"HTTP/1.1 401 ", b"no")
        s.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _ = _read_answer(s)
        assert status.startswith(b"HTTP/1.1 500")
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert _read_answer(s) == (b"HTTP/1.1 200 ", b"hello")


def test_a_client_that_waits_for_100_continue_is_told_to_go_on(tmp_path):
    with served(tmp_path) as server, server.raw() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 ")
        s.sendall(b"hello")
        assert _read_answer(s) == (b"HTTP/1.1 200 ", b"hello")


def test_a_request_that_is_not_http_gets_a_400_and_the_connection_closes(tmp_path):
    with served(tmp_path) as server:
        with server.raw() as s:
            s.sendall(b"HELLO THERE\r\n\r\n")
            status, _ = _read_answer(s)
            assert status.startswith(b"HTTP/1.1 400")
            assert s.recv(10) == b""
        _still_serving(server)


def test_peers_that_go_away_mid_body_or_mid_answer_end_only_their_connection(tmp_path):
    with served(tmp_path) as server:
        for _ in range(20):
            with server.raw() as s:
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 10)
            with server.raw() as s:
                s.sendall(b"GET /pieces?n=2000 HTTP/1.1\r\nHost: t\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 200")
        _still_serving(server)


def test_stopping_closes_idle_connections_and_lets_a_request_in_flight_finish(tmp_path):
    server = _Served(tmp_path / "s.sock")
    server.start()
    idle, busy = server.raw(), server.raw()
    try:
        idle.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        assert _read_answer(idle)[1] == b"hi"  # now idle, kept alive
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert server.entered.wait(10)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert idle.recv(10) == b""  # closed at once
        server.release.set()
        assert _read_answer(busy) == (b"HTTP/1.1 200 ", b"finished")
        stopper.join(10)
        assert server.stopped_after is not None and server.stopped_after < h11serve.GRACE
    finally:
        server.release.set()
        idle.close()
        busy.close()
        server.stop()  # (again, if the test stopped it: it returns at once)
