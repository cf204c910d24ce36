"""HTTP/1.1 to the daemon over a unix socket or TCP: the little of it the API uses, on a socket.

The CLI runs one short command at a time, so its start-up matters more than anything a full HTTP
client offers (http.client alone imports the email package and ssl). Requests carry a
Content-Length or a chunked body; answers come with either. Connections are kept alive, one per
thread.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import urlencode

from pfsfuse.api import wire
from pfsfuse.metadata.errors import Unavailable

_PIECE = 1 << 20
_LINE = 1 << 16  # the longest status, header or chunk-size line we accept


class _BadAnswer(ConnectionError):
    """Not HTTP as the daemon speaks it: nothing more can be read from that connection."""


# Failures of the connection itself (a file that cannot be read while streaming it is not one).
_ERRORS = (ConnectionError, TimeoutError)


class _Answer:
    """An answer's status, then its body as it arrives."""

    def __init__(self, rfile):
        self._rfile = rfile
        line = rfile.readline(_LINE)
        if not line:
            raise ConnectionError("the connection was closed before an answer")
        version, _, rest = line.partition(b" ")
        try:
            self.status = int(rest[:3])
        except ValueError:
            raise _BadAnswer(f"not an HTTP answer: {line[:80]!r}") from None
        self.keep_alive = version == b"HTTP/1.1"
        self._chunked = False
        self._left: int | None = None  # bytes left of the body, or of the current chunk
        while (line := self._line()) not in (b"\r\n", b"\n"):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                self._left = self._number(value, 10)
            elif name == b"transfer-encoding":
                self._chunked = value == b"chunked"
            elif name == b"connection" and value == b"close":
                self.keep_alive = False
        if self._chunked:
            self._left = 0
        self.done = self._left == 0 and not self._chunked

    def _line(self) -> bytes:
        line = self._rfile.readline(_LINE)
        if not line.endswith(b"\n"):
            raise _BadAnswer("an answer was cut short (or has an over-long line)")
        return line

    @staticmethod
    def _number(text: bytes, base: int) -> int:
        try:
            return int(text.split(b";")[0], base)
        except ValueError:
            raise _BadAnswer(f"not a length: {text[:80]!r}") from None

    def read1(self, n: int) -> bytes:
        """At most n bytes of the body, at least one unless it has ended."""
        if self.done:
            return b""
        if self._chunked and self._left == 0:
            self._left = self._number(self._line(), 16)
            if self._left == 0:  # the last chunk: skip the trailers
                while self._line() not in (b"\r\n", b"\n"):
                    pass
                self.done = True
                return b""
        piece = self._rfile.read1(n if self._left is None else min(n, self._left))
        if not piece:
            if self._left is not None:
                raise _BadAnswer("an answer was cut short")
            self.done = True  # a body without a length ends with its connection
            self.keep_alive = False
            return piece
        if self._left is not None:
            self._left -= len(piece)
            if self._left == 0:
                if self._chunked:
                    self._line()  # the CRLF after the chunk's data
                else:
                    self.done = True
        return piece

    def read(self) -> bytes:
        return b"".join(iter(lambda: self.read1(_PIECE), b""))


class _Connection:
    def __init__(self, address: str, timeout: float | None):
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.settimeout(timeout)
                self.sock.connect(address[5:])
            except OSError:
                self.sock.close()
                raise
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self._rfile.close()
        self.sock.close()

    def closed_by_peer(self) -> bool:
        """Readable while idle: the daemon closed it."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None) -> _Answer:
        head = f"{method} {path} HTTP/1.1\r\nHost: pfs\r\n".encode()
        if body is None:
            self.sock.sendall(head + b"\r\n")
        elif isinstance(body, bytes):
            self.sock.sendall(b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body))
        else:
            self.sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            for piece in body:
                if piece:
                    self.sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.sock.sendall(b"0\r\n\r\n")
        return _Answer(self._rfile)


class Transport:
    def __init__(self, address: str, timeout: float | None = None):
        """`address` is `unix:/path` or `host:port`; `timeout` bounds each socket operation."""
        self.address = address
        self._timeout = timeout
        self._local = threading.local()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, method: str, path: str, body) -> _Answer:
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
                return conn.request(method, path, body)
            except _ERRORS as e:
                self.close()
                if attempt or streaming:
                    raise Unavailable(f"lost the pfs daemon at {self.address}: {e}") from None
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None) -> bytes:
        """One request; its whole answer's body, or the daemon's error raised."""
        answer = self._send(method, path, body)
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
