"""A chunk that arrives damaged is fetched again before it is called corrupt."""

from __future__ import annotations

import os

import pytest

from helpers import write_chunks
from pfsfuse.chunks import ChunkStore, CorruptChunk
from pfsfuse.chunks.local import LocalStore


class _Garbling(LocalStore):
    """Flips a byte in the first `times` answers (as a bad link or proxy would)."""

    def __init__(self, root, times: int):
        super().__init__(root)
        self.times = times

    def _garble(self, data):
        if self.times <= 0 or not data:
            return data
        self.times -= 1
        out = bytearray(data)
        out[len(out) // 2] ^= 0xFF
        return bytes(out)

    def get(self, key, offset=0, length=None):
        return self._garble(super().get(key, offset, length))

    def view(self, key, offset, length):
        return self._garble(super().view(key, offset, length))


@pytest.mark.parametrize(("times", "survives"), [(1, True), (1000, False)])
def test_a_chunk_damaged_in_transit_is_fetched_again(tmp_path, times, survives):
    data = os.urandom(300 << 10)
    written = ChunkStore(LocalStore(tmp_path), 7)
    located = write_chunks(written, data, target=64 << 10)
    garbling = _Garbling(tmp_path, times)
    chunks = ChunkStore(garbling, 7)
    h, size, loc = located[0]
    if survives:
        assert chunks.reader.read(h, size, loc) == data[:size]
        assert garbling.times == 0
    else:
        with pytest.raises(CorruptChunk):
            chunks.reader.read(h, size, loc)
