"""Serving the API on the daemon's unix socket: HTTP/1.1 with h11, one trio task a connection,
each request handed straight to the ASGI app.

Every mount miss, `fsync` and CLI verb is a request on this socket, one at a time per connection,
so the cost of a request before the app sees it is paid everywhere. Through hypercorn (a task
spawned per request, each message passed through its stream and event layers) a point read cost
the daemon about 1 ms of CPU, of which the app's own work was a small part; here it costs about
half that. A request is read, run and answered in the connection's task, and an answer's head,
body and end go out in one write. The socket's clients are the daemon's own user (it is
0600), so this server needs none of what a listener that strangers reach needs; the TCP
listeners keep hypercorn (`pfsfuse.httpserve`).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import unquote_to_bytes

import h11
import trio

log = logging.getLogger("pfsfuse.http")

RECV = 1 << 20  # bytes a read asks for: a put-file body of GiB is read in few, big pieces
KEEP_ALIVE = 300.0  # seconds an idle connection is kept
GRACE = 2.0  # seconds requests in flight get to finish once the daemon stops
_SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1"}


class _Closed(Exception):
    """The peer went away or broke the protocol: the connection ends."""


class _Connection:
    def __init__(self, stream: trio.SocketStream, app, stop: trio.Event):
        self.stream = stream
        self.app = app
        self.stop = stop
        self.http = h11.Connection(h11.SERVER)
        self.idle = True  # waiting for a request: a stopping server closes it at once
        self.cancel = trio.CancelScope()

    async def run(self) -> None:
        with self.cancel:
            while not self.stop.is_set():
                self.idle, event = True, None
                with trio.move_on_after(KEEP_ALIVE):
                    try:
                        event = await self._next()
                    except h11.RemoteProtocolError as e:
                        await self._refuse(e)
                        return
                self.idle = False
                if type(event) is not h11.Request:
                    return  # closed, or idle too long
                await self._answer(event)
                if not await self._finish_cycle():
                    return

    async def _next(self):
        """The next h11 event, reading as needed; RemoteProtocolError if the peer breaks HTTP
        (closing mid-body is one way), _Closed if the connection failed."""
        while True:
            event = self.http.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(RECV)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise _Closed from e
            self.http.receive_data(data)

    async def _refuse(self, e: h11.RemoteProtocolError) -> None:
        """A request h11 cannot parse gets its 4xx, when an answer can still be sent."""
        if self.http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = f"bad request: {e}\n".encode()
            try:
                await self._send(
                    h11.Response(status_code=e.error_status_hint, headers=_plain(body)),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                )
            except _Closed:
                pass

    async def _send(self, *events) -> None:
        """Send h11 events in one write (an answer's head, body and end are one)."""
        try:
            data = b"".join(self.http.send(e) or b"" for e in events)
        except h11.LocalProtocolError as e:  # (the peer broke the exchange first)
            raise _Closed from e
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise _Closed from e

    async def _answer(self, req: h11.Request) -> None:
        target = req.target
        path, _, query = target.partition(b"?")
        scope = {
            **_SCOPE,
            "method": req.method.decode("ascii"),
            "scheme": "http",
            "path": _unquote(path),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": [(name, value) for name, value in req.headers],
            "client": None,
            "server": None,
            "state": {},
        }
        head = req.method == b"HEAD"
        started: list = []  # the response's start, until its first body piece is sent
        ended = False

        async def receive() -> dict:
            if self.http.their_state is not h11.SEND_BODY:
                return {"type": "http.disconnect"}  # (the body was read: nothing else comes)
            try:
                if self.http.they_are_waiting_for_100_continue:  # (curl, for a big body)
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                event = await self._next()
            except (h11.RemoteProtocolError, _Closed):
                return {"type": "http.disconnect"}  # gone mid-body: the answer cannot go either
            if type(event) is h11.Data:
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            return {"type": "http.request", "body": b"", "more_body": False}  # EndOfMessage

        async def send(message: dict) -> None:
            nonlocal ended
            kind = message["type"]
            if kind == "http.response.start":
                started.append(message)
                return
            if kind != "http.response.body" or ended:
                return
            events: list = []
            if started:
                start = started.pop()
                events.append(h11.Response(status_code=start["status"], headers=start.get("headers", [])))
            body = message.get("body", b"")
            if body and not head:
                events.append(h11.Data(data=body))
            if not message.get("more_body", False):
                ended = True
                events.append(h11.EndOfMessage())
            await self._send(*events)

        try:
            await self.app(scope, receive, send)
        except _Closed:
            raise
        except Exception:
            log.exception("%s %s failed", req.method.decode(), target.decode(errors="replace"))
            if self.http.our_state is h11.SEND_RESPONSE:
                body = b"internal error\n"
                await self._send(
                    h11.Response(status_code=500, headers=_plain(body)), h11.Data(data=body), h11.EndOfMessage()
                )
                return
        if self.http.our_state is not h11.DONE:
            raise _Closed("the answer was cut short")  # only closing tells the client so

    async def _finish_cycle(self) -> bool:
        """Ready the connection for the next request; False when it is to close. A body the app
        left unread (a refused put) is read to its end, so that the client sees the answer."""
        try:
            while self.http.their_state is h11.SEND_BODY:
                await self._next()
        except h11.RemoteProtocolError:
            return False
        if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
            return False
        self.http.start_next_cycle()
        return True


def _plain(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]


def _unquote(path: bytes) -> str:
    return unquote_to_bytes(path).decode("utf-8", "surrogateescape")


def _bind(path: Path) -> trio.SocketListener:
    """A listening unix socket at `path`, for its owner only (the daemon's umask already keeps
    others out while it is made)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def serve(app, path: Path, stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on a unix socket at `path` until `stop` is set; requests in flight then get
    GRACE seconds to finish, idle connections are closed at once."""
    listener = _bind(path)
    connections: set[_Connection] = set()
    all_closed = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        conn = _Connection(stream, app, stop)
        connections.add(conn)
        try:
            await conn.run()
        except _Closed:
            pass
        except Exception:  # noqa: BLE001 - one connection's failure ends that connection only
            log.warning("a connection on the unix socket ended on an error", exc_info=True)
        finally:
            connections.discard(conn)
            if stop.is_set() and not connections:
                all_closed.set()
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as accepting:
            async with listener:
                task_status.started()
                nursery.start_soon(_cancel_on, stop, accepting)
                while True:
                    nursery.start_soon(handle, await listener.accept())
        for conn in connections:
            if conn.idle:
                conn.cancel.cancel()
        if connections:
            with trio.move_on_after(GRACE):
                await all_closed.wait()
        nursery.cancel_scope.cancel()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
