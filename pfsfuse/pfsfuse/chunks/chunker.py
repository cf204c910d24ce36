"""Content-defined chunking (FastCDC): an edit changes only the chunks around it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from pyfastcdc import BinaryStreamReader, FastCDC

MIN_SIZE = 256 << 10
AVG_SIZE = 1 << 20  # pyfastcdc's avg_size; cuts are sought after MIN_SIZE, so the mean is ~1.25 MiB
MAX_SIZE = 4 << 20


class Chunker:
    """Cuts data into chunks of MIN_SIZE to MAX_SIZE bytes (the last one may be shorter) at
    content-defined boundaries, chosen by a gear table keyed with the store's seed. Thread-safe."""

    def __init__(self, seed: int):
        self._cdc = FastCDC(
            AVG_SIZE,
            min_size=MIN_SIZE,
            max_size=MAX_SIZE,
            normalized_chunking=1,
            seed=_gear_seed(seed),
        )

    def cut(self, stream: BinaryStreamReader) -> Iterator[memoryview]:
        """The chunks of a binary stream (anything with readinto or read); nothing if it is empty.

        Each chunk is a view of an internal buffer that the next chunk overwrites: use or copy it
        before asking for the next one.
        """
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data

    def cut_buf(self, buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """The chunks of a buffer, as views into it (no copies); nothing if it is empty."""
        for chunk in self._cdc.cut_buf(memoryview(buf).cast("B")):
            yield chunk.data


def _gear_seed(seed: int) -> int:
    # Chunk boundaries are visible to clients, so they must not reveal the secret store seed: derive
    # the gear seed one-way from it. pyfastcdc takes 1..2**63-1 (0 selects its unkeyed table).
    digest = hashlib.blake2b(seed.to_bytes(8, "big"), digest_size=8, person=b"pfs-gear").digest()
    return int.from_bytes(digest, "big") >> 1 or 1
