"""HTTP/1.1 to the daemon over a unix socket or TCP, on the standard library's http.client.

The CLI runs one short command at a time, so its start-up matters more than anything a bigger
HTTP client offers. Connections are kept alive, one per thread.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import urlencode

from pfsfuse.api import wire
from pfsfuse.metadata.errors import Unavailable

_PIECE = 1 << 20
# Failures of the connection itself (a file that cannot be read while streaming it is not one).
_ERRORS = (ConnectionError, TimeoutError, http.client.HTTPException)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("pfs", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Transport:
    def __init__(self, address: str, timeout: float | None = None):
        """`address` is `unix:/path` or `host:port`; `timeout` bounds each socket operation."""
        self.address = address
        self._timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.address.startswith("unix:"):
                conn = _UnixConnection(self.address[5:], self._timeout)
            else:
                host, _, port = self.address.rpartition(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=self._timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, method: str, path: str, body) -> http.client.HTTPResponse:
        streaming = body is not None and not isinstance(body, bytes)
        # A kept-alive connection may have been closed by the daemon meanwhile: a request whose
        # body we still hold is retried once on a fresh connection.
        for attempt in (0, 1):
            conn = self._connection()
            if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                conn.close()  # idle and readable: the daemon closed it (a streamed body cannot be retried)
            try:
                if conn.sock is None:
                    conn.connect()
            except OSError as e:
                self.close()
                raise Unavailable(f"cannot reach the pfs daemon at {self.address}: {e}") from None
            try:
                conn.request(method, path, body=body, encode_chunked=streaming)
                return conn.getresponse()
            except _ERRORS as e:
                self.close()
                if attempt or streaming:
                    raise Unavailable(f"lost the pfs daemon at {self.address}: {e}") from None
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None) -> bytes:
        """One request; its whole response body, or the daemon's error raised."""
        resp = self._send(method, path, body)
        try:
            data = resp.read()
        except _ERRORS as e:
            self.close()
            raise Unavailable(f"the pfs daemon at {self.address} stopped answering: {e}") from None
        if resp.status != 200:
            wire.raise_error(resp.status, data)
        return data

    @contextlib.contextmanager
    def stream(self, path: str, params: dict[str, str]) -> Iterator[Iterator[bytes]]:
        """A GET whose response body is read piece by piece as it arrives."""
        resp = self._send("GET", f"{path}?{urlencode(params)}", None)
        if resp.status != 200:
            wire.raise_error(resp.status, resp.read())

        def pieces() -> Iterator[bytes]:
            try:
                while piece := resp.read1(_PIECE):
                    yield piece
            except _ERRORS as e:
                raise Unavailable(f"the pfs daemon at {self.address} stopped answering: {e}") from None

        try:
            yield pieces()
        finally:
            if not resp.isclosed():
                self.close()  # the body was not read to its end: the connection is unusable
