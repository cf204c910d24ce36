"""File bodies as Python binary streams, read as the daemon (or the object store) sends them."""

from __future__ import annotations

import io
from collections.abc import Iterator

_BUFFER = 1 << 20


class PiecesIO(io.RawIOBase):
    """An iterator of byte strings as a raw, read-only stream (a download, or an upload given
    as a generator)."""

    def __init__(self, pieces: Iterator[bytes]):
        self._pieces = pieces
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._left = memoryview(piece)
        n = min(len(b), len(self._left))
        b[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()  # ends the request (or the chunk reads) behind the iterator
        super().close()


def reader(pieces: Iterator[bytes]) -> io.BufferedReader:
    """A buffered binary stream (read, readline, iteration, `with`) over `pieces`."""
    return io.BufferedReader(PiecesIO(iter(pieces)), _BUFFER)
