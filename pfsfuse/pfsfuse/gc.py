"""Garbage collection: deletes the chunks, packs and tree pages that no commit refers to, while the
daemon goes on serving reads and writes.

Four rules keep live data safe, each enforced under a lock that writers share:

1. Marks from a snapshot. Under the index lock, `collect` reads every commit (open ones included)
   and, at that same instant, starts recording every tree page written (`DB.written`) and every
   chunk a write claims (`pfsfuse.engine.guard.Guard`). Whatever a commit refers to later was
   either reachable then or written or claimed since, and is kept.
2. A chunk is claimed before it is trusted. A write claims each chunk it refers to, new or
   deduplicated, and looks it up in the index in the same critical section in which the collector
   removes dead index entries: a write that found a chunk indexed has claimed it, so it is kept;
   a write after the removal finds it missing and stores it again. The claims of writes already
   in flight when collection starts are kept as well.
3. Unindexed packs (a write in flight uploads its packs before indexing them; a crash leaves them
   behind) are deleted only once every write that was running when they were listed has ended,
   none of their chunks was indexed meanwhile, and they were first seen unindexed at least
   `orphan_age` seconds ago (that sighting is kept in the index, in "gc"). A write tells the
   guard of the packs it indexes in the critical section that indexes them, so that a pack is
   either in the index the collection reads or among those it hears of.
4. A pack is condemned before it is deleted or rewritten (`Guard.condemn`): unless a chunk was
   indexed in it since the snapshot (it is then left for the next collection), no write may index
   chunks in it from then on. Only a direct write indexes chunks in packs it did not just make:
   a client stored them before its request, which indexes them file by file. It checks that those
   packs exist, and fails (to be written again) if a collection condemned one while it ran.

Packs that hold no live chunk are deleted; packs that hold some are rewritten with only those, the
index is switched to the copies (only where it still points at the old pack) and the old pack is
deleted. Readers holding an old location look the chunk up again (`EngineCore.read_chunks`).
"""

from __future__ import annotations

import functools
import re
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import msgspec

from pfsfuse.api.types import GcResult
from pfsfuse.chunks import ChunkLoc, CorruptPack, ObjectNotFound, pack_key, read_pack_index
from pfsfuse.metadata import tree
from pfsfuse.metadata.errors import DataLoss

if TYPE_CHECKING:
    from pfsfuse.engine.core import EngineCore

SIGHTINGS = "gc"  # unindexed pack id -> when a collection first saw it (big-endian double)
_PACK_KEY = re.compile(r"packs/[0-9a-f]{2}/([0-9a-f]{32})")
_LOC = msgspec.msgpack.Decoder(ChunkLoc)
_LOC_ENC = msgspec.msgpack.Encoder()
_BATCH = 50_000  # index entries deleted per critical section, so writers are not held up long
_TIME = struct.Struct(">d")


def _stays(gone: set[bytes], indexed: dict[bytes, ChunkLoc], h: bytes, loc: ChunkLoc) -> bool:
    """Whether a pack's chunk is kept: live, and still indexed at this place in this pack."""
    return h not in gone and indexed.get(h) == loc


class _Pack:
    """A listed pack that the index refers to, and what collection does with it."""

    def __init__(self, pack: bytes, entries: list[tuple[bytes, ChunkLoc, int]]):
        self.pack = pack
        self.entries = entries  # from its trailer: (hash, location, raw size)
        self.keep: list[tuple[bytes, ChunkLoc, int]] = []

    def plan(self, kept: Callable[[bytes, ChunkLoc], bool]) -> None:
        """Decide which chunks stay."""
        self.keep = [e for e in self.entries if kept(e[0], e[1])]

    def dropped(self) -> tuple[int, int]:
        """The chunks that go, and their stored bytes."""
        return len(self.entries) - len(self.keep), sum(e[1].length for e in self.entries) - sum(
            e[1].length for e in self.keep
        )


def collect(store: EngineCore, dry_run: bool = False, orphan_age: float = 3600.0) -> GcResult:
    with store.exclusively():
        return _Collection(store, dry_run, orphan_age).run()


class _Collection:
    def __init__(self, store: EngineCore, dry_run: bool, orphan_age: float):
        self.store = store
        self.db = store.db
        self.guard = store.guard
        self.dry_run = dry_run
        self.orphan_age = orphan_age
        self.result = GcResult(dry_run=dry_run)

    def run(self) -> GcResult:
        started = time.monotonic()
        with self.db.lock:  # the snapshot, and recording from that instant on
            commits = self.store.live_commits()
            if not self.dry_run:
                self.db.written = set()
                self.guard.start()
        try:
            listed = self._list_packs()
            listed_after = self.guard.next_write()  # only writes numbered below may own them
            live_pages, live_chunks = self._mark(commits)
            indexed = self._scan_chunks()  # read after the snapshot
            gone = set(self._unindex([h for h in indexed if h not in live_chunks]))
            by_pack: dict[bytes, dict[bytes, ChunkLoc]] = defaultdict(dict)
            for h, loc in indexed.items():
                by_pack[loc.pack][h] = loc
            packs = self._read_trailers([p for p in listed if p in by_pack])
            for p in packs:
                p.plan(functools.partial(_stays, gone, by_pack[p.pack]))
            packs = self._condemn([p for p in packs if len(p.keep) < len(p.entries)])
            for p in packs:
                n, size = p.dropped()
                self.result.chunks += n
                self.result.chunk_bytes += size
            self._rewrite([p for p in packs if p.keep])
            self._delete([p.pack for p in packs if not p.keep], "packs_deleted")
            self._orphans([p for p in listed if p not in by_pack], listed_after)
            self._sweep_pages(live_pages)
        finally:
            if not self.dry_run:
                with self.db.lock:
                    self.db.written = None
                    self.guard.stop()
        self.result.seconds = time.monotonic() - started
        return self.result

    # -- what is live -------------------------------------------------------------------------

    def _mark(self, commits) -> tuple[set[bytes], set[bytes]]:
        pages: set[bytes] = set()
        chunks: set[bytes] = set()
        seen: set[bytes] = set()
        for c in commits:
            for kind, h in tree.refs(self.db, c.tree, seen):
                (chunks if kind == "chunk" else pages).add(h)
        return pages, chunks

    def _scan_chunks(self) -> dict[bytes, ChunkLoc]:
        return {h: _LOC.decode(v) for h, v in self.db.scan("chunks")}

    def _list_packs(self) -> list[bytes]:
        found = []
        for key in self.store.objects.list("packs/"):
            m = _PACK_KEY.fullmatch(key)
            if m:
                found.append(bytes.fromhex(m.group(1)))
        return found

    def _read_trailers(self, packs: list[bytes], strict: bool = True) -> list[_Pack]:
        """The packs with their trailers; a pack deleted since it was listed is left out, and so
        is, unless `strict`, one without a readable trailer."""

        def read(p: bytes) -> _Pack | None:
            try:
                return _Pack(p, read_pack_index(self.store.objects, p))
            except ObjectNotFound:
                return None
            except CorruptPack as e:
                if strict:
                    raise DataLoss(f"garbage collection stopped: {e}") from None
                return None

        with ThreadPoolExecutor(16) as pool:
            return [p for p in pool.map(read, packs) if p is not None]

    # -- sweeping -----------------------------------------------------------------------------

    def _unindex(self, dead: list[bytes]) -> list[bytes]:
        """Removes dead chunks from the index unless a write claimed them; returns those removed."""
        if self.dry_run:
            return dead
        removed = []
        for i in range(0, len(dead), _BATCH):
            with self.db.lock, self.guard.lock:
                claimed = self.guard.claimed or set()  # recorded while not a dry run
                batch = [h for h in dead[i : i + _BATCH] if h not in claimed]
                with self.store.index.mutation() as v:
                    for h in batch:
                        v.txn.delete("chunks", h)
            removed += batch
        return removed

    def _condemn(self, packs: list[_Pack]) -> list[_Pack]:
        """The packs to rewrite or delete, less those in which a write indexed chunks since the
        snapshot (the plan may not know of them: left for the next collection); no write may
        index chunks in those returned any more."""
        if self.dry_run:
            return packs
        doomed = set(self.guard.condemn([p.pack for p in packs]))
        return [p for p in packs if p.pack in doomed]

    def _rewrite(self, packs: list[_Pack]) -> None:
        """Copies the live chunks of `packs` into new packs, points the index at the copies and
        deletes the old packs."""
        if not packs:
            return
        self.result.packs_rewritten = len(packs)
        if self.dry_run:
            return
        old: dict[bytes, bytes] = {}  # chunk -> its encoded location in the old pack
        with self.store.chunks.writer() as writer:
            for p in packs:
                keep = {h for h, _, _ in p.keep}
                for h, loc, _ in p.keep:
                    old[h] = _LOC_ENC.encode(loc)
                # The whole pack, dead chunks too: back to back, it is read in a few requests.
                located = [(h, raw, loc) for h, loc, raw in p.entries]
                for (h, _, _), data in zip(located, self._read(located), strict=True):
                    if h in keep:
                        self._repoint(writer.add(h, data), old)
            self._repoint(writer.flush(), old)
        self._delete([p.pack for p in packs], None)

    def _repoint(self, moved: list[tuple[bytes, ChunkLoc]], old: dict[bytes, bytes]) -> None:
        """Index the copies of chunks that are durable now, where the index still points at the
        old copy (a chunk written again meanwhile may point elsewhere)."""
        if not moved:
            return
        with self.store.index.mutation() as v:
            for h, loc in moved:
                if self.db.get("chunks", h) == old[h]:
                    v.txn.put("chunks", h, _LOC_ENC.encode(loc))

    def _read(self, located) -> Iterator[bytes]:
        try:
            yield from self.store.chunks.reader.read_range(located)
        except (CorruptPack, ObjectNotFound) as e:
            raise DataLoss(f"garbage collection stopped: {e}") from None

    def _delete(self, packs: list[bytes], counter: str | None) -> None:
        if counter is not None:
            setattr(self.result, counter, getattr(self.result, counter) + len(packs))
        if self.dry_run:
            return
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: self.store.objects.delete(pack_key(p)), packs))
        cache = self.store.chunks.reader.cache
        if cache is not None:
            for p in packs:
                cache.drop(p)

    def _orphans(self, unindexed: list[bytes], listed_after: int) -> None:
        """Deletes unindexed packs once rule 3 allows; records when the others were first seen."""
        now = time.time()
        seen = {k: _TIME.unpack(v)[0] for k, v in self.db.scan(SIGHTINGS)}
        writes_done = self.dry_run or not self.guard.running_since(listed_after)
        ripe = [p for p in unindexed if writes_done and now - seen.get(p, now) >= self.orphan_age]
        doomed = ripe if self.dry_run else self.guard.condemn(ripe)
        with self.guard.lock:  # read after condemning: packs indexed since are left alone
            indexed = set(self.guard.indexed_packs or ())
        gone = set(doomed)
        waiting = {p: seen.get(p, now) for p in unindexed if p not in gone and p not in indexed}
        # Sizes are for the report only: an orphan may be a torn upload without a trailer.
        for pack in self._read_trailers(doomed, strict=False):
            self.result.chunks += len(pack.entries)
            self.result.chunk_bytes += sum(loc.length for _, loc, _ in pack.entries)
        self._delete(doomed, "orphan_packs")
        self.result.orphans_waiting = len(waiting)
        if not self.dry_run:
            with self.store.index.mutation() as v:
                for p in seen.keys() - waiting.keys():
                    v.txn.delete(SIGHTINGS, p)
                for p, first in waiting.items():
                    v.txn.put(SIGHTINGS, p, _TIME.pack(first))

    def _sweep_pages(self, live: set[bytes]) -> None:
        dead = [(h, len(v)) for h, v in self.db.scan("pages") if h not in live]
        with self.db.lock:
            if not self.dry_run:
                written = self.db.written or set()  # recorded while not a dry run
                dead = [(h, n) for h, n in dead if h not in written]
                with self.store.index.mutation() as v:
                    for h, _ in dead:
                        v.txn.delete("pages", h)
        self.result.pages = len(dead)
        self.result.page_bytes = sum(n for _, n in dead)
