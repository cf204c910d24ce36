"""The chunk store: content-defined chunks, packed into objects of an object store, read back
verified. It knows nothing of commits or trees; callers keep the chunk hash -> location index."""

from .chunker import AVG_SIZE, MAX_SIZE, MIN_SIZE, Chunker
from .local import LocalStore
from .objects import ObjectNotFound, ObjectStore, check_key, open_store, retrying
from .packs import (
    RAW,
    ZSTD,
    ChunkLoc,
    ChunkReader,
    ChunkStore,
    CorruptChunk,
    CorruptPack,
    PackWriter,
    pack_key,
    read_pack_index,
)

__all__ = [
    "AVG_SIZE",
    "MAX_SIZE",
    "MIN_SIZE",
    "RAW",
    "ZSTD",
    "ChunkLoc",
    "ChunkReader",
    "ChunkStore",
    "Chunker",
    "CorruptChunk",
    "CorruptPack",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "PackWriter",
    "check_key",
    "open_store",
    "pack_key",
    "read_pack_index",
]
