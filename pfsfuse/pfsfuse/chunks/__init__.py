"""The chunk store: content-defined chunks, packed into objects of an object store, read back
verified. It knows nothing of commits or trees; callers keep the chunk hash -> location index.

Names are loaded on first use (PEP 562), so that a client needing only `ChunkLoc` does not pay
for zstd and the chunker at start-up.
"""

import importlib

_EXPORTS = {
    "AVG_SIZE": "chunker",
    "MAX_SIZE": "chunker",
    "MIN_SIZE": "chunker",
    "Chunker": "chunker",
    "LocalStore": "local",
    "S3Store": "s3",
    "GCSStore": "gcs",
    "AzureStore": "azure",
    "CloudStore": "cloud",
    "ObjectNotFound": "objects",
    "ObjectStore": "objects",
    "StorageError": "objects",
    "check_key": "objects",
    "open_store": "backends",
    "retrying": "objects",
    "RAW": "packs",
    "ZSTD": "packs",
    "ChunkLoc": "location",
    "ChunkReader": "packs",
    "ChunkStore": "packs",
    "ChunkCache": "cache",
    "cache_for": "cache",
    "CorruptChunk": "packs",
    "CorruptPack": "packs",
    "PackWriter": "packs",
    "pack_key": "location",
    "read_pack_index": "packs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
