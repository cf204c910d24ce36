"""HTTP/1.1 to the daemon over a unix socket or TCP, with h11 (the HTTP/1.1 state machine that
the daemon's server uses too) on a plain socket.

The CLI runs one short command at a time, so its start-up matters more than anything a full HTTP
client offers: http.client alone imports the email package and ssl, h11 a few small modules.
Connections are kept alive, one per thread. `https://` addresses are verified against $PFS_CA if
set, else the system's trust store; ssl is imported for them only.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlencode

import h11

from pfsfuse.api import wire
from pfsfuse.metadata.errors import InvalidArgument, Unavailable

_PIECE = 1 << 20
_GATHER = 64 << 10  # pieces of a request smaller than this are gathered into one write


class _BadAnswer(ConnectionError):
    """Not HTTP as the daemon speaks it, or cut short: nothing more can be read from there."""


# Failures of the connection itself (a file that cannot be read while streaming it is not one).
_ERRORS = (ConnectionError, TimeoutError)


class _Answer:
    """An answer's status, then its body as it arrives."""

    def __init__(self, conn: _Connection, status: int):
        self._conn = conn
        self.status = status
        self.done = False

    @property
    def keep_alive(self) -> bool:
        """Whether the connection can carry another request (once the body is read)."""
        return self._conn.finished()

    def read1(self, n: int = _PIECE) -> bytes:
        """Some of the body (as much as arrived, up to about n bytes); b"" once it has ended."""
        if self.done:
            return b""
        event = self._conn.next_event(n)
        if type(event) is h11.EndOfMessage:
            self.done = True
            return b""
        if type(event) is not h11.Data:
            raise _BadAnswer(f"unexpected in an answer's body: {event!r}")
        return bytes(event.data)

    def read(self) -> bytes:
        return b"".join(iter(self.read1, b""))


def _tls_context():
    import ssl

    cafile = os.environ.get("PFS_CA") or None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise Unavailable(f"PFS_CA={cafile}: cannot load the certificate authority: {e}") from None


def split_address(address: str) -> tuple[str, str, int, bool]:
    """(`unix` path or "", host, port, tls) of `unix:/path`, `host:port`, `http://host:port` or
    `https://host:port`."""
    if address.startswith("unix:"):
        return address[5:], "", 0, False
    tls = address.startswith("https://")
    rest = address.removeprefix("https://").removeprefix("http://").rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{address!r}: expected host:port, https://host:port or unix:/path")
    return "", host.strip("[]"), int(port), tls


class _Connection:
    def __init__(self, address: str, timeout: float | None):
        path, host, port, tls = split_address(address)
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.settimeout(timeout)
                self.sock.connect(path)
            except OSError:
                self.sock.close()
                raise
        else:
            sock = socket.create_connection((host, port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                try:
                    sock = _tls_context().wrap_socket(sock, server_hostname=host)
                except BaseException:
                    sock.close()
                    raise
            self.sock = sock
        self.http = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def closed_by_peer(self) -> bool:
        """Readable while idle: the daemon closed it (TLS may have a record pending: that too is
        only ever the close)."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def _send(self, events: list) -> None:
        """Send h11 events, small pieces gathered into one write: h11 gives a request's head a
        piece per header, and each write wakes the daemon (about 100 µs here). A big piece goes
        as it is, not copied."""
        small: list[bytes] = []
        for event in events:
            for piece in self.http.send_with_data_passthrough(event) or ():
                if len(piece) >= _GATHER:
                    if small:
                        self.sock.sendall(b"".join(small))
                        small = []
                    self.sock.sendall(piece)
                    continue
                small.append(piece)
        if small:
            self.sock.sendall(b"".join(small))

    def next_event(self, n: int = _PIECE):
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as e:
                raise _BadAnswer(f"a bad or cut short answer: {e}") from None
            if event is not h11.NEED_DATA:
                return event
            self.http.receive_data(self.sock.recv(n))  # b"" at the end: h11 tells if too soon

    def request(
        self, method: str, path: str, body: bytes | Iterable[bytes] | None, token: str | None, accept: str | None
    ) -> _Answer:
        if self.finished():
            self.http.start_next_cycle()
        headers = [("Host", "pfs")]
        if accept:
            headers.append(("Accept", accept))
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        if isinstance(body, bytes):
            headers.append(("Content-Length", str(len(body))))
        elif body is not None:
            headers.append(("Transfer-Encoding", "chunked"))
        head = h11.Request(method=method, target=path, headers=headers)
        try:
            if body is None or isinstance(body, bytes):
                self._send([head, *([h11.Data(data=body)] if body else []), h11.EndOfMessage()])
            else:  # each piece as it comes: a slow source must not leave the daemon waiting
                self._send([head])
                for piece in body:
                    if piece:
                        self._send([h11.Data(data=piece)])
                self._send([h11.EndOfMessage()])
        except OSError:  # a broken pipe, a reset, or TLS's word for them
            # The daemon may have refused the request before reading its body (a caller not
            # allowed to write): its answer is then waiting to be read.
            if not self._answer_waiting():
                raise
        while True:
            event = self.next_event()
            if type(event) is h11.Response:
                return _Answer(self, event.status_code)
            if type(event) is h11.ConnectionClosed:
                raise ConnectionError("the connection was closed before an answer")
            # an informational (1xx) answer: the real one follows

    def _answer_waiting(self) -> bool:
        try:
            return self.closed_by_peer() and self.http.their_state is h11.SEND_RESPONSE
        except OSError:
            return False

    def finished(self) -> bool:
        """Whether both sides are done with the last request and may go on to another."""
        return self.http.our_state is h11.DONE and self.http.their_state is h11.DONE


Token = str | Callable[[], str | None] | None


class Transport:
    def __init__(self, address: str, timeout: float | None = None, token: Token = None):
        """`address` is `unix:/path`, `host:port` or `https://host:port`; `timeout` bounds each
        socket operation; `token` is sent with every request (a function: asked each time, for
        a client that acts for many callers, as the S3 gateway's)."""
        split_address(address)  # a bad address is an error now, not at the first request
        self.address = address
        self.token = token
        self._timeout = timeout
        self._local = threading.local()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, method: str, path: str, body, accept: str | None = None) -> _Answer:
        streaming = body is not None and not isinstance(body, bytes)
        # A kept-alive connection may have been closed by the daemon meanwhile: a request whose
        # body we still hold is retried once on a fresh connection.
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            if conn is not None and conn.closed_by_peer():
                self.close()  # (a streamed body could not be retried)
                conn = None
            if conn is None:
                try:
                    conn = self._local.conn = _Connection(self.address, self._timeout)
                except OSError as e:
                    raise Unavailable(f"cannot reach the pfs daemon at {self.address}: {e}") from None
            try:
                return conn.request(method, path, body, self.token() if callable(self.token) else self.token, accept)
            except _ERRORS as e:
                self.close()
                if attempt or streaming:
                    raise Unavailable(f"lost the pfs daemon at {self.address}: {e}") from None
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def call(
        self, method: str, path: str, body: bytes | Iterable[bytes] | None = None, accept: str | None = None
    ) -> bytes:
        """One request; its whole answer's body (in the format `accept`, if the route has it), or
        the daemon's error raised."""
        answer = self._send(method, path, body, accept)
        try:
            data = answer.read()
        except _ERRORS as e:
            self.close()
            raise Unavailable(f"the pfs daemon at {self.address} stopped answering: {e}") from None
        if not answer.keep_alive:
            self.close()
        if answer.status != 200:
            wire.raise_error(answer.status, data)
        return data

    @contextlib.contextmanager
    def stream(self, path: str, params: dict[str, str]) -> Iterator[Iterator[bytes]]:
        """A GET whose answer's body is read piece by piece as it arrives."""
        answer = self._send("GET", f"{path}?{urlencode(params)}", None)

        def pieces() -> Iterator[bytes]:
            try:
                while piece := answer.read1(_PIECE):
                    yield piece
            except _ERRORS as e:
                raise Unavailable(f"the pfs daemon at {self.address} stopped answering: {e}") from None

        try:
            if answer.status != 200:
                wire.raise_error(answer.status, b"".join(pieces()))
            yield pieces()
        finally:
            if not (answer.done and answer.keep_alive):
                self.close()  # the body was not read to its end: the connection is unusable
