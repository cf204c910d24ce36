"""Chunks packed into pack objects, and read back verified.

A pack object holds the chunks' stored bytes back to back, then a trailer (msgpack list of
(hash, offset, length, codec, raw_size)), the trailer's length as 4 bytes big-endian, and MAGIC.
The caller keeps the chunk hash -> ChunkLoc index; the trailer lets fsck and GC rebuild or check it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec
import xxhash
import zstandard

from .chunker import Chunker
from .objects import ObjectStore

RAW = 0
ZSTD = 1
MAGIC = b"PFSPACK1"
TARGET_PACK_SIZE = 16 << 20
_FOOTER = 4 + len(MAGIC)
_TAIL_READ = 64 << 10  # the first ranged get of read_pack_index; holds most trailers whole
_MAX_UPLOADS = 2  # packs uploading at once per writer: bounds its memory to about three packs

_Entry = tuple[bytes, int, int, int, int]  # trailer entry: (hash, offset, length, codec, raw_size)


class ChunkLoc(msgspec.Struct, array_like=True, frozen=True):
    """Where a chunk is stored: a byte range of a pack object, and its encoding."""

    pack: bytes  # 16-byte pack id
    offset: int
    length: int  # stored length
    codec: int  # RAW or ZSTD


class CorruptPack(Exception):
    """A pack object is not what was written."""


class CorruptChunk(CorruptPack):
    """The bytes read for a chunk do not hash to its address."""


def pack_key(pack: bytes) -> str:
    name = pack.hex()
    return f"packs/{name[:2]}/{name}"


class _Pack:
    """A pack being filled."""

    def __init__(self) -> None:
        self.id = os.urandom(16)
        self.data = bytearray()
        self.entries: list[_Entry] = []

    def append(self, h: bytes, stored, codec: int, raw_size: int) -> None:
        self.entries.append((h, len(self.data), len(stored), codec, raw_size))
        self.data += stored

    def seal(self) -> bytearray:
        trailer = msgspec.msgpack.encode(self.entries)
        self.data += trailer + len(trailer).to_bytes(4, "big") + MAGIC
        return self.data

    def locations(self) -> list[tuple[bytes, ChunkLoc]]:
        return [(h, ChunkLoc(self.id, off, n, codec)) for h, off, n, codec, _ in self.entries]


class PackWriter:
    """Appends chunks to packs of about `target` bytes, uploading full packs in the background.

    add and flush return the locations of chunks only once their pack is durable in the store. One
    writer serves one thread. If an upload fails, the writer aborts and raises; it can then be used
    again.
    """

    def __init__(
        self,
        objects: ObjectStore,
        hash: Callable[[bytes], bytes],
        target: int = TARGET_PACK_SIZE,
    ):
        self.objects = objects
        self._hash = hash
        self._target = target
        self._cctx = zstandard.ZstdCompressor(level=1)
        self._pack: _Pack | None = None
        self._uploads: deque[tuple[_Pack, int, Future]] = deque()  # oldest first
        self._pool: ThreadPoolExecutor | None = None
        self._seen: set[bytes] = set()  # every hash added since the last abort
        self._pending: set[bytes] = set()  # those whose location is not returned yet
        self.bytes_stored = 0  # chunk bytes (after compression) in packs uploaded so far

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()  # a no-op after flush

    def add(self, h: bytes, data) -> list[tuple[bytes, ChunkLoc]]:
        """Stores chunk `data` (bytes-like, copied) under its hash `h`, unless this writer already
        has it. Returns the (hash, location) of every chunk made durable since the last call."""
        if h in self._seen:
            return []
        # Storing data under a wrong address would corrupt every later reader, and xxh3 is cheap.
        if self._hash(data) != h:
            raise ValueError(f"chunk hash {h.hex()} does not match the chunk's data")
        stored, codec = self._cctx.compress(data), ZSTD
        if 10 * len(stored) > 9 * len(data):  # keep compression only if it saves 10%
            stored, codec = data, RAW
        if self._pack is None:
            self._pack = _Pack()
        self._pack.append(h, stored, codec, len(data))
        self._seen.add(h)
        self._pending.add(h)
        done = self._submit() if len(self._pack.data) >= self._target else []
        while self._uploads and self._uploads[0][2].done():
            done += self._finish_oldest()
        return done

    def flush(self) -> list[tuple[bytes, ChunkLoc]]:
        """Uploads the partial pack, if any, and returns every location not returned yet."""
        done = self._submit() if self._pack is not None else []
        while self._uploads:
            done += self._finish_oldest()
        self._stop_pool()
        return done

    def pending(self, h: bytes) -> bool:
        """Whether `h` was added and its location not returned yet."""
        return h in self._pending

    def abort(self) -> None:
        """Drops every chunk whose location was not returned, and forgets all chunks added, so that
        any may be added again. Uploads already running complete; garbage collection reclaims
        those packs."""
        self._stop_pool()
        self._uploads.clear()
        self._pack = None
        # Not just the pending hashes: a failing add may have dropped locations it was returning.
        self._seen.clear()
        self._pending.clear()

    def _submit(self) -> list[tuple[bytes, ChunkLoc]]:
        # Waits for the oldest upload first when too many are in flight, returning its locations.
        done = self._finish_oldest() if len(self._uploads) >= _MAX_UPLOADS else []
        pack, self._pack = self._pack, None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_MAX_UPLOADS, thread_name_prefix="pfs-pack-upload")
        stored = len(pack.data)  # before the upload appends the trailer
        upload = self._pool.submit(lambda: self.objects.put(pack_key(pack.id), pack.seal()))
        self._uploads.append((pack, stored, upload))
        return done

    def _finish_oldest(self) -> list[tuple[bytes, ChunkLoc]]:
        pack, stored, upload = self._uploads.popleft()
        try:
            upload.result()
        except BaseException:
            self.abort()
            raise
        self._pending.difference_update(entry[0] for entry in pack.entries)
        self.bytes_stored += stored
        return pack.locations()

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class ChunkReader:
    """Reads chunks from packs and verifies them against their address. Thread-safe."""

    def __init__(self, objects: ObjectStore, hash: Callable[[bytes], bytes]):
        self.objects = objects
        self._hash = hash
        self._local = threading.local()  # a zstd context per thread: they are not thread-safe

    def read(self, h: bytes, size: int, loc: ChunkLoc) -> bytes:
        """The `size` bytes of chunk `h` stored at `loc`. Raises CorruptChunk if they do not hash
        to `h`, ObjectNotFound if the pack is missing."""
        stored = self.objects.get(pack_key(loc.pack), loc.offset, loc.length)
        where = f"chunk {h.hex()} at {loc.offset} in pack {loc.pack.hex()}"
        if len(stored) != loc.length:
            raise CorruptChunk(f"{where}: the pack ends {loc.length - len(stored)} bytes short")
        if loc.codec == RAW:
            data = stored
        elif loc.codec == ZSTD:
            data = self._decompress(stored, size, where)
        else:
            raise CorruptChunk(f"{where}: unknown codec {loc.codec}")
        if len(data) != size or self._hash(data) != h:
            raise CorruptChunk(f"{where}: content does not match the chunk's hash and size")
        return data

    def _decompress(self, stored: bytes, size: int, where: str) -> bytes:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        try:
            # zstd allocates what the frame header claims: check it before trusting it.
            if zstandard.frame_content_size(stored) != size:
                raise CorruptChunk(f"{where}: compressed frame is not of size {size}")
            return dctx.decompress(stored)
        except zstandard.ZstdError as exc:
            raise CorruptChunk(f"{where}: {exc}") from None


def read_pack_index(objects: ObjectStore, pack: bytes) -> list[tuple[bytes, ChunkLoc, int]]:
    """The (hash, location, raw size) of every chunk in a pack, read from the pack's tail alone."""
    key = pack_key(pack)
    tail = objects.get(key, -_TAIL_READ)
    if len(tail) < _FOOTER or not tail.endswith(MAGIC):
        raise CorruptPack(f"pack {pack.hex()}: no pack footer (truncated, or not a pack)")
    n = int.from_bytes(tail[-_FOOTER : -len(MAGIC)], "big")
    if n + _FOOTER <= len(tail):
        trailer = tail[-_FOOTER - n : -_FOOTER]
    else:
        trailer = objects.get(key, -_FOOTER - n, n)
    if len(trailer) != n:
        raise CorruptPack(f"pack {pack.hex()}: the object is shorter than its {n}-byte trailer")
    try:
        entries = msgspec.msgpack.decode(trailer, type=list[_Entry])
    except msgspec.DecodeError as exc:
        raise CorruptPack(f"pack {pack.hex()}: bad trailer: {exc}") from None
    end = 0
    for h, offset, length, _, _ in entries:
        if offset != end:  # chunks are written back to back
            raise CorruptPack(f"pack {pack.hex()}: trailer entry for {h.hex()} is out of place")
        end += length
    return [(h, ChunkLoc(pack, off, length, codec), raw) for h, off, length, codec, raw in entries]


class ChunkStore:
    """Chunking, chunk ids and packs over one object store.

    `seed` is the store's secret 64-bit seed, made once when the store is created: it keys the chunk
    ids (xxh3-128) and the chunk boundaries, so that writers cannot steer either.
    """

    def __init__(self, objects: ObjectStore, seed: int):
        if not 0 <= seed < 1 << 64:
            raise ValueError("the store seed must be an unsigned 64-bit integer")

        def chunk_hash(data) -> bytes:  # a closure, not a partial, so no repr shows the seed
            return xxhash.xxh3_128_digest(data, seed=seed)

        self.objects = objects
        self.hash: Callable[[bytes], bytes] = chunk_hash
        self.chunker = Chunker(seed)
        self.reader = ChunkReader(objects, chunk_hash)

    def writer(self, target: int = TARGET_PACK_SIZE) -> PackWriter:
        return PackWriter(self.objects, self.hash, target)
