"""Where the data of a put comes from: a stream the caller hands over, a file the daemon opens
itself, or a URL it fetches."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import BinaryIO

import httpx

from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import InvalidArgument, NotFound, Unavailable


@contextlib.contextmanager
def open_source(op: Put) -> Iterator[BinaryIO]:
    """The data a Put stores: its stream, a local file the daemon opens, or a URL it fetches."""
    if op.stream is not None:
        yield op.stream
    elif op.local is not None:
        try:
            f = open(op.local, "rb")
        except FileNotFoundError:
            raise NotFound(f"{op.local}: no such file") from None
        except IsADirectoryError:
            raise InvalidArgument(f"{op.local} is a directory; use -r") from None
        except PermissionError:
            raise InvalidArgument(f"{op.local}: permission denied") from None
        with f:
            yield f
    elif op.url is not None:
        with _fetch(op.url) as stream:
            yield stream
    else:
        raise InvalidArgument(f"no data given for {op.path}")


class _HttpStream(io.RawIOBase):
    """A readable file over a streaming HTTP response."""

    def __init__(self, response: httpx.Response):
        self._it = response.iter_bytes(1 << 20)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@contextlib.contextmanager
def _fetch(url: str):
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"unsupported URL {url!r}: use http:// or https://")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as r:
            if r.status_code != 200:
                raise Unavailable(f"cannot fetch {url}: HTTP {r.status_code}")
            yield io.BufferedReader(_HttpStream(r), 1 << 20)
    except httpx.HTTPError as e:
        raise Unavailable(f"cannot fetch {url}: {e or type(e).__name__}") from None
