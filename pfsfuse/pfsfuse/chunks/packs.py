"""Chunks packed into pack objects, and read back verified.

A pack object holds the chunks' stored bytes back to back, then a trailer (msgpack list of
(hash, offset, length, codec, raw_size)), the trailer's length as 4 bytes big-endian, and MAGIC.
The caller keeps the chunk hash -> ChunkLoc index; the trailer lets fsck and GC rebuild or check it.
"""

from __future__ import annotations

import functools
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import msgspec
import xxhash

from .cache import ChunkCache
from .chunker import MAX_SIZE as MAX_CHUNK
from .chunker import Chunker
from .location import ChunkLoc, pack_key
from .objects import ObjectNotFound, ObjectStore

RAW = 0
ZSTD = 1
MAGIC = b"PFSPACK1"
TARGET_PACK_SIZE = 16 << 20
_FOOTER = 4 + len(MAGIC)
_TAIL_READ = 64 << 10  # the first ranged get of read_pack_index; holds most trailers whole
_MAX_UPLOADS = 3  # packs uploading at once per writer: bounds its memory to about four packs
_SAMPLE = 64 << 10  # compress this much of a chunk first; skip the rest if it does not shrink
_MIN_SAMPLE = 4 << 10  # chunks of less than four times this are compressed whole
_SYNC_PACKS = 16  # packs made durable together: fewer flushes, and locations still flow
_RUN_BYTES = 32 << 20  # adjacent chunks read with one request, up to this much: a whole pack

_Entry = tuple[bytes, int, int, int, int]  # trailer entry: (hash, offset, length, codec, raw_size)


class CorruptPack(Exception):
    """A pack object is not what was written."""


class CorruptChunk(CorruptPack):
    """The bytes read for a chunk do not hash to its address."""


def _buffer(size: int) -> mmap.mmap:
    # Private: a shared anonymous map cannot grow (resize past its first size faults, SIGBUS).
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


class _Pack:
    """A pack being filled, in a reused buffer (allocating and growing buffers costs copies).

    Buffers are anonymous maps: page-aligned, so that a local store can hand them to the disk
    without copying them into the page cache (O_DIRECT)."""

    def __init__(self, buffer: mmap.mmap) -> None:
        self.id = os.urandom(16)
        self.data = buffer
        self.size = 0
        self.end = 0  # after sealing: the end of the trailer
        self.entries: list[_Entry] = []

    def _write(self, at: int, piece) -> int:
        end = at + len(piece)
        if end > len(self.data):
            self.data.resize(end)
        self.data[at:end] = piece
        return end

    def append(self, h: bytes, stored, codec: int, raw_size: int) -> None:
        self.entries.append((h, self.size, len(stored), codec, raw_size))
        self.size = self._write(self.size, stored)

    def seal(self) -> None:
        trailer = msgspec.msgpack.encode(self.entries)
        self.end = self._write(self.size, trailer + len(trailer).to_bytes(4, "big") + MAGIC)

    def upload(self, objects: ObjectStore) -> None:
        with memoryview(self.data) as view:
            objects.put(pack_key(self.id), view[: self.end], durable=False)

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
        import zstandard  # not at import: see ChunkReader._decompress

        self._cctx = zstandard.ZstdCompressor(level=1)
        self._pack: _Pack | None = None
        self._uploads: deque[tuple[_Pack, int, Future]] = deque()  # oldest first
        self._syncs: deque[tuple[list[_Pack], int, Future]] = deque()  # oldest first
        self._pool: ThreadPoolExecutor | None = None
        self._seen: set[bytes] = set()  # every hash added since the last abort
        self._pending: set[bytes] = set()  # those whose location is not returned yet
        self._free: list[mmap.mmap] = []  # buffers of uploaded packs, for the next packs
        self._unsynced: list[_Pack] = []  # uploaded, not yet being made durable
        self._unsynced_bytes = 0
        self.bytes_stored = 0  # chunk bytes (after compression) in packs made durable so far

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()  # a no-op after flush

    def add(self, h: bytes, data) -> list[tuple[bytes, ChunkLoc]]:
        """Stores chunk `data` (bytes-like, copied) under its hash `h` (which the caller computed
        from `data` with this store's hash), unless this writer already has it. Returns the (hash,
        location) of every chunk made durable since the last call."""
        if h in self._seen:
            return []
        stored, codec = self._compress(data)
        if self._pack is None:
            self._pack = _Pack(self._free.pop() if self._free else _buffer(self._target + MAX_CHUNK))
        self._pack.append(h, stored, codec, len(data))
        self._seen.add(h)
        self._pending.add(h)
        if self._pack.size >= self._target:
            self._submit()
        while self._uploads and self._uploads[0][2].done():
            self._finish_oldest()
        done = []
        while self._syncs and self._syncs[0][2].done():
            done += self._finish_sync()
        return done

    def _compress(self, data) -> tuple[object, int]:
        """zstd when it saves 10%; a sample decides first, so incompressible data costs little."""
        view = memoryview(data)
        sample = min(_SAMPLE, len(view) // 4)  # a quarter of a small chunk (an fsync's fine ones)
        if sample >= _MIN_SAMPLE and 10 * len(self._cctx.compress(view[:sample])) > 9 * sample:
            return view, RAW
        stored = self._cctx.compress(view)
        if 10 * len(stored) > 9 * len(view):
            return view, RAW
        return stored, ZSTD

    def flush(self) -> list[tuple[bytes, ChunkLoc]]:
        """Uploads the partial pack, if any, and returns every location not returned yet."""
        if self._pack is not None and self._pool is None:
            return self._store_alone()
        if self._pack is not None:
            self._submit()
        while self._uploads:
            self._finish_oldest()
        self._start_sync()
        done = []
        while self._syncs:
            done += self._finish_sync()
        self._stop_pool()
        return done

    def _store_alone(self) -> list[tuple[bytes, ChunkLoc]]:
        """A writer's only pack (a small write, as each fsync through a mount is): stored and made
        durable in this thread, since starting upload threads for it cost a write about 1 ms."""
        pack, self._pack = self._pack, None
        assert pack is not None
        stored = pack.size  # before the trailer
        pack.seal()
        try:
            pack.upload(self.objects)
            self.objects.sync([pack_key(pack.id)])
        except BaseException:
            self.abort()
            raise
        self._free.append(pack.data)
        del pack.data
        self._pending.difference_update(entry[0] for entry in pack.entries)
        self.bytes_stored += stored
        return pack.locations()

    def pending(self, h: bytes) -> bool:
        """Whether `h` was added and its location not returned yet."""
        return h in self._pending

    def abort(self) -> None:
        """Drops every chunk whose location was not returned, and forgets all chunks added, so that
        any may be added again. Uploads already running complete; garbage collection reclaims
        those packs."""
        self._stop_pool()
        self._uploads.clear()
        self._syncs.clear()
        self._unsynced.clear()
        self._unsynced_bytes = 0
        self._pack = None
        # Not just the pending hashes: a failing add may have dropped locations it was returning.
        self._seen.clear()
        self._pending.clear()

    def _submit(self) -> None:
        # Waits for the oldest upload first when too many are in flight.
        if len(self._uploads) >= _MAX_UPLOADS:
            self._finish_oldest()
        pack, self._pack = self._pack, None
        assert pack is not None  # called with a pack to send
        if self._pool is None:
            # one more thread than uploads, for the flushes that make packs durable
            self._pool = ThreadPoolExecutor(_MAX_UPLOADS + 1, thread_name_prefix="pfs-pack-upload")
        stored = pack.size  # before the upload appends the trailer
        pack.seal()
        upload = self._pool.submit(pack.upload, self.objects)
        self._uploads.append((pack, stored, upload))

    def _finish_oldest(self) -> None:
        pack, stored, upload = self._uploads.popleft()
        try:
            upload.result()
        except BaseException:
            self.abort()
            raise
        self._free.append(pack.data)  # written out: the buffer can take the next pack
        del pack.data  # which the pack must not touch any more
        self._unsynced.append(pack)
        self._unsynced_bytes += stored
        if len(self._unsynced) >= _SYNC_PACKS:
            self._start_sync()

    def _start_sync(self) -> None:
        """Makes the uploaded packs durable in the background; only then may anything refer to
        their chunks, so their locations are returned when it completes."""
        if self._unsynced:
            keys = [pack_key(p.id) for p in self._unsynced]
            assert self._pool is not None  # the packs were uploaded through it
            job = self._pool.submit(self.objects.sync, keys)
            self._syncs.append((self._unsynced, self._unsynced_bytes, job))
            self._unsynced, self._unsynced_bytes = [], 0

    def _finish_sync(self) -> list[tuple[bytes, ChunkLoc]]:
        packs, stored, job = self._syncs.popleft()
        try:
            job.result()
        except BaseException:
            self.abort()
            raise
        done = []
        for pack in packs:
            self._pending.difference_update(entry[0] for entry in pack.entries)
            done += pack.locations()
        self.bytes_stored += stored
        return done

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class ChunkReader:
    """Reads chunks from packs and verifies them against their address. Thread-safe.

    With a `cache`, chunks are looked up there first, verified like any others, and stored there
    (as stored in their pack) once read and verified."""

    def __init__(
        self,
        objects: ObjectStore,
        hash: Callable[[bytes], bytes],
        ahead: int = 8,
        cache: ChunkCache | None = None,
        ahead_bytes: int = 128 << 20,
    ):
        self.objects = objects
        self.cache = cache
        self._hash = hash
        self._local = threading.local()  # a zstd context per thread: they are not thread-safe
        self._ahead = ahead
        self._ahead_bytes = ahead_bytes
        self._pool = ThreadPoolExecutor(ahead, thread_name_prefix="pfs-read-ahead")

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        if self.cache is not None:
            self.cache.flush()  # a client about to exit keeps what it read

    def read_range(
        self, chunks: Sequence[tuple[bytes, int, ChunkLoc]], offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """Bytes [offset, offset + length) of the data made of `chunks` (hash, size, location), in
        pieces.

        Chunks stored back to back in a pack (as those of a file written at once are) are fetched
        together, up to _RUN_BYTES a request: an object store pays per request, and a local one
        maps each run once. The following runs are fetched in parallel while one is consumed, at
        most `ahead` runs and, beyond the first, `ahead_bytes` at once: that gives a disk its
        queue depth and an object store its concurrency."""
        runs: list[list[tuple[bytes, int, ChunkLoc]]] = []
        stored: list[int] = []  # the bytes each run fetches
        cuts = []  # (lo, hi) of each wanted chunk, in order
        pos, end = 0, None if length is None else offset + length
        for h, size, loc in chunks:
            if end is not None and pos >= end:
                break
            if pos + size > offset:
                cuts.append((max(0, offset - pos), size if end is None else min(size, end - pos)))
                prev = runs[-1][-1][2] if runs else None
                if (
                    prev is not None
                    and prev.pack == loc.pack
                    and prev.offset + prev.length == loc.offset
                    and stored[-1] + loc.length <= _RUN_BYTES
                ):
                    runs[-1].append((h, size, loc))
                    stored[-1] += loc.length
                else:
                    runs.append([(h, size, loc)])
                    stored.append(loc.length)
            pos += size
        pieces = self._read_runs(runs, stored)
        for (lo, hi), data in zip(cuts, pieces, strict=True):
            yield data if (lo, hi) == (0, len(data)) else data[lo:hi]

    def read_moving(
        self,
        chunks: Sequence[tuple[bytes, int, ChunkLoc]],
        relocate: Callable[[list[bytes]], Sequence[ChunkLoc]],
        offset: int = 0,
        length: int | None = None,
        attempts: int = 3,
    ) -> Iterator[bytes]:
        """read_range, for readers racing a garbage collection: when a pack is gone, the chunks
        moved, so `relocate(hashes)` says where they are now and the read goes on from there."""
        done, attempt = 0, 1
        while True:
            left = None if length is None else length - done
            try:
                for piece in self.read_range(chunks, offset + done, left):
                    done += len(piece)
                    yield piece
                return
            except ObjectNotFound:
                if attempt == attempts:
                    raise
                attempt += 1
                locs = relocate([h for h, _, _ in chunks])
                chunks = [(h, size, loc) for (h, size, _), loc in zip(chunks, locs, strict=True)]

    def _read_runs(self, runs, stored) -> Iterator[bytes]:
        if len(runs) == 1:
            yield from self._read_run(runs[0])
            return
        pending: deque[tuple[Future, int]] = deque()
        todo = deque(zip(runs, stored, strict=True))
        in_flight = 0
        try:
            while todo or pending:
                while (
                    todo and len(pending) < self._ahead and (not pending or in_flight + todo[0][1] <= self._ahead_bytes)
                ):
                    run, size = todo.popleft()
                    pending.append((self._pool.submit(self._read_run, run), size))
                    in_flight += size
                future, size = pending.popleft()
                in_flight -= size
                yield from future.result()
        finally:
            for future, _ in pending:
                future.cancel()

    def read(self, h: bytes, size: int, loc: ChunkLoc) -> bytes:
        """The `size` bytes of chunk `h` stored at `loc`. Raises CorruptChunk if they do not hash
        to `h`, ObjectNotFound if the pack is missing."""
        return self._read_run([(h, size, loc)])[0]

    def _read_run(self, run: list[tuple[bytes, int, ChunkLoc]]) -> list[bytes]:
        """The chunks of `run`, which lie back to back in one pack: those not in the cache with
        one ranged get."""
        datas: list[bytes | None] = self._cached(run) if self.cache is not None else [None] * len(run)
        missing = [i for i, data in enumerate(datas) if data is None]
        if missing:
            first, last = run[missing[0]][2], run[missing[-1]][2]
            stored = self.objects.view(pack_key(first.pack), first.offset, last.offset + last.length - first.offset)
            for i in missing:
                h, size, loc = run[i]
                start = loc.offset - first.offset
                piece = stored[start : start + loc.length]
                try:
                    datas[i] = self._decode(h, size, loc, piece)
                except CorruptChunk:
                    # Damaged on the way (a flaky network or proxy) or at rest: fetched once more
                    # before it is called corrupt.
                    piece = self.objects.get(pack_key(loc.pack), loc.offset, loc.length)
                    datas[i] = self._decode(h, size, loc, piece)
                if self.cache is not None:
                    self.cache.put(loc.pack, loc.offset, piece)
        return [d for d in datas if d is not None]  # all of them by now

    def _cached(self, run: list[tuple[bytes, int, ChunkLoc]]) -> list[bytes | None]:
        """The chunks of `run` found whole and good in the cache; None for the others (never
        cached, or damaged on disk: fetched again, which rewrites them)."""
        assert self.cache is not None  # called only with a cache
        pieces = self.cache.get(run[0][2].pack, [(loc.offset, loc.length) for _, _, loc in run])
        datas = []
        for (h, size, loc), stored in zip(run, pieces, strict=True):
            try:
                datas.append(None if stored is None else self._decode(h, size, loc, stored))
            except CorruptChunk:
                datas.append(None)
        return datas

    def _decode(self, h: bytes, size: int, loc: ChunkLoc, stored: bytes | memoryview) -> bytes:
        where = f"chunk {h.hex()} at {loc.offset} in pack {loc.pack.hex()}"
        if len(stored) != loc.length:
            raise CorruptChunk(f"{where}: the pack ends {loc.length - len(stored)} bytes short")
        if loc.codec == RAW:
            # A local store's mapped pack gives a memoryview: read like bytes, and not copied.
            data = cast(bytes, stored)
        elif loc.codec == ZSTD:
            data = self._decompress(stored, size, where)
        else:
            raise CorruptChunk(f"{where}: unknown codec {loc.codec}")
        if len(data) != size or self._hash(data) != h:
            raise CorruptChunk(f"{where}: content does not match the chunk's hash and size")
        return data

    def _decompress(self, stored: bytes | memoryview, size: int, where: str) -> bytes:
        # Loaded at the first compressed chunk, not at import: zstd costs a client's start-up a
        # large extension module, which readers of incompressible data never need.
        import zstandard

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
    ids (xxh3-128) and the chunk boundaries, so that writers cannot steer either. `cache`, if
    given, keeps chunks read (a client's local copy of a far store).
    """

    def __init__(self, objects: ObjectStore, seed: int, cache: ChunkCache | None = None):
        if not 0 <= seed < 1 << 64:
            raise ValueError("the store seed must be an unsigned 64-bit integer")

        def chunk_hash(data) -> bytes:  # a closure, not a partial, so no repr shows the seed
            return xxhash.xxh3_128_digest(data, seed=seed)

        def sign(data: bytes) -> bytes:
            import hmac  # here only: it loads OpenSSL, which readers need not

            return hmac.digest(seed.to_bytes(8, "big"), data, "sha256")

        self.objects = objects
        self.hash: Callable[[bytes], bytes] = chunk_hash
        # What a client that stored chunks itself attaches to their locations: proof that it
        # holds the seed, as only those trusted with the store do (see engine Staging.adopt).
        self.sign: Callable[[bytes], bytes] = sign
        self._new_chunker = lambda: Chunker(seed)
        self.reader = ChunkReader(objects, chunk_hash, cache=cache)

    @functools.cached_property
    def chunker(self) -> Chunker:
        """Made on first use: readers never cut."""
        return self._new_chunker()

    def writer(self, target: int = TARGET_PACK_SIZE) -> PackWriter:
        return PackWriter(self.objects, self.hash, target)
