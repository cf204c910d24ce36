"""Where a chunk is stored: kept apart from the packing code so that clients load it cheaply."""

from __future__ import annotations

import msgspec


class ChunkLoc(msgspec.Struct, array_like=True, frozen=True):
    """A byte range of a pack object, and its encoding."""

    pack: bytes  # 16-byte pack id
    offset: int
    length: int  # stored length
    codec: int  # RAW or ZSTD


def pack_key(pack: bytes) -> str:
    name = pack.hex()
    return f"packs/{name[:2]}/{name}"
