"""What every part of the engine shares: the index and chunk store it opens in a PFS_HOME, change
notification, and the engine's side of the chunk store (staging the chunks of a write, locating
and reading chunks), which writes, reads and the maintenance operations (fsck, garbage
collection, extract and restore) all use."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import msgspec

from pfsfuse.chunks import (
    ChunkLoc,
    ChunkStore,
    CorruptChunk,
    ObjectNotFound,
    StorageError,
    open_store,
    pack_key,
)
from pfsfuse.engine.guard import Guard, Write
from pfsfuse.home import Home
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.errors import DataLoss, FailedPrecondition, PermissionDenied, Unavailable
from pfsfuse.metadata.index import Index
from pfsfuse.metadata.records import ChunkRef, Commit
from pfsfuse.version import VERSION

_LOC = msgspec.msgpack.Decoder(ChunkLoc)
_LOC_ENC = msgspec.msgpack.Encoder()


class EngineCore:
    """The store in a PFS_HOME: owns the RocksDB index, so one process at a time opens it."""

    def __init__(self, home: Home, storage: str | None = None):
        home.ensure()
        self.home = home
        self.config = home.create_config(storage)
        self.objects = open_store(self.config.storage)
        self.chunks = ChunkStore(self.objects, self.config.seed)
        self.db = DB(str(home.index), self.config.seed)
        self.index = Index(self.db)
        # Bumped and notified whenever a commit finishes or a branch moves (subscribe-commit).
        self.changed = threading.Condition()
        self.generation = 0
        self.guard = Guard()  # the chunks writes refer to, for garbage collection
        self.exclusive = threading.Lock()  # held by a garbage collection, extract or restore

    def close(self) -> None:
        self.chunks.reader.close()
        self.db.close()
        self.objects.close()

    def version(self) -> str:
        return VERSION

    def wait_changed(self, generation: int, timeout: float) -> int:
        """Block until the store changed after `generation` (or `timeout` passed); the current
        generation."""
        with self.changed:
            self.changed.wait_for(lambda: self.generation != generation, timeout=timeout)
            return self.generation

    def notify_changed(self) -> None:
        """Wake the subscribers: a commit finished, a branch moved or something was deleted."""
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def ancestry(self, repo: str, c: Commit | None) -> Iterator[Commit]:
        """`c` and its ancestors, newest first."""
        while c is not None:
            yield c
            c = self.index.commit(repo, c.parent) if c.parent else None

    def live_commits(self) -> list[Commit]:
        """Every commit of every repo, open ones included: the roots of all live data."""
        return [c for r in self.index.repos() for c in self.index.commits(r.name)]

    @contextlib.contextmanager
    def exclusively(self) -> Iterator[None]:
        """Runs a garbage collection, extract or restore: one at a time."""
        if not self.exclusive.acquire(blocking=False):
            raise FailedPrecondition("a garbage collection, extract or restore is already running; try again later")
        try:
            yield
        finally:
            self.exclusive.release()

    # -- chunks -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Staging]:
        """Stages the chunks of one write, claimed until the block ends: the commit change that
        refers to them goes inside it, after `Staging.flush`. If the block fails, the chunks not
        flushed yet are dropped (their packs are garbage)."""
        with self.guard.write() as write:
            staging = Staging(self, write)
            try:
                yield staging
            except BaseException:
                staging.abort()
                raise

    def indexed(self, h: bytes) -> bool:
        return self.index.chunk_location(h) is not None

    def all_indexed(self, hashes: list[bytes]) -> bool:
        return self.index.chunks_indexed(hashes)

    def record_locations(self, locations: list[tuple[bytes, ChunkLoc]], write: Write | None = None) -> None:
        """Index chunks that are now durable in the object store (for `write`, refused if a
        collection condemned their packs while it ran)."""
        if locations:
            # The collector hears of the packs in the critical section that indexes them: told
            # before a collection starts but indexed after it read the index, a pack would be
            # neither, and deleted as an orphan once the write ended.
            with self.db.lock:
                self.guard.indexing({loc.pack for _, loc in locations}, write)
                self.index.put_chunk_locations((h, _LOC_ENC.encode(loc)) for h, loc in locations)

    def location(self, h: bytes) -> ChunkLoc:
        data = self.index.chunk_location(h)
        if data is None:
            raise DataLoss(f"chunk {h.hex()} is referenced but not in the chunk index")
        return _LOC.decode(data)

    def chunk_locations(self, hashes: list[bytes]) -> list[ChunkLoc]:
        return [self.location(h) for h in hashes]

    def read_chunk(self, ref: ChunkRef) -> bytes:
        return b"".join(self.read_chunks([ref]))

    def read_chunks(self, refs, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Bytes [offset, offset + length) of the chunks `refs`; a chunk that garbage collection
        moved meanwhile is looked up again."""
        located = [(r.hash, r.size, self.location(r.hash)) for r in refs]
        try:
            yield from self.chunks.reader.read_moving(located, self.chunk_locations, offset, length)
        except (ObjectNotFound, CorruptChunk) as e:
            raise DataLoss(str(e)) from None
        except StorageError as e:  # the object store failed past its retries
            raise Unavailable(str(e)) from None


class Staging:
    """The chunks of one write (a put, a restore), stored before the commit change that refers to
    them: each is claimed against garbage collection, written into packs unless the store already
    has it, and indexed once its pack is durable. Made by `EngineCore.staging`."""

    def __init__(self, engine: EngineCore, write: Write):
        self._engine = engine
        self._write = write
        self._claims = write.claims
        self._present: set[bytes] = set()  # packs of adopted chunks seen to exist
        self._writer = engine.chunks.writer()

    @property
    def bytes_stored(self) -> int:
        """Chunk bytes (after compression) written into packs so far."""
        return self._writer.bytes_stored

    def put(self, piece) -> ChunkRef:
        """Stages one chunk; one the store or this write has already is not written again."""
        engine = self._engine
        h = engine.chunks.hash(piece)
        if not engine.guard.claim(self._claims, h, engine.indexed):
            engine.record_locations(self._writer.add(h, piece))
        return ChunkRef(h, len(piece))

    def keep(self, refs: Iterable[ChunkRef]) -> bool:
        """Claims stored chunks the write refers to again; False if one is no longer indexed."""
        engine = self._engine
        return engine.guard.keep(self._claims, (r.hash for r in refs), engine.all_indexed)

    def put_all(self, pieces: Iterable) -> list[ChunkRef]:
        return [self.put(p) for p in pieces]

    def put_buffer(self, buf) -> list[ChunkRef]:
        """Cuts `buf` into chunks and stages them."""
        return self.put_all(self._engine.chunks.chunker.cut_buf(buf))

    def adopt(self, located: list[tuple[ChunkRef, ChunkLoc]], signed: bytes, proof: bytes) -> list[ChunkRef]:
        """Stages chunks that a client stored in durable packs itself: indexed where it put them,
        unless the store has them already. Only from a client whose `proof` (of the `signed`
        bytes) shows it holds the store's seed: any other could make later writers of the same
        content refer to whatever it pleases."""
        import hmac

        engine = self._engine
        if not hmac.compare_digest(proof, engine.chunks.sign(signed)):
            raise PermissionDenied("chunk locations are accepted only from clients holding the store's config")
        new = [(r.hash, loc) for r, loc in located if not engine.guard.claim(self._claims, r.hash, engine.indexed)]
        # A collection may have deleted them before this write started (the client took longer
        # than the orphan age); one deleting them later condemns them first, and the write then
        # may not index them.
        unchecked = list({loc.pack for _, loc in new} - self._present)
        for pack, there in zip(unchecked, _each(lambda p: engine.objects.exists(pack_key(p)), unchecked), strict=True):
            if not there:
                raise FailedPrecondition(
                    f"pack {pack.hex()}, stored by this client, is gone: a garbage collection deleted it "
                    "before the write reached the daemon (an orphan age shorter than the upload); write again"
                )
        self._present.update(unchecked)
        engine.record_locations(new, self._write)
        return [r for r, _ in located]

    def flush(self) -> None:
        """Stores the last pack and indexes every chunk staged: the commit change may follow."""
        self._engine.record_locations(self._writer.flush())

    def abort(self) -> None:
        self._writer.abort()


def _each(f, items: list) -> Iterator:
    """f of each item; in parallel when there are several (each may be a request to the store)."""
    if len(items) < 2:
        return map(f, items)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(16, len(items))) as pool:
        return iter(list(pool.map(f, items)))
