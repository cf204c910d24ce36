"""RocksDB through rocksdict: one column family per record kind, one write batch per operation.

Keys are bytes chosen so that listings are prefix scans in the order users expect. Pages and blobs
are content addressed with the store's keyed hash and never change, so their decoded form is
cached without bound checks beyond an LRU size.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator

import xxhash
from rocksdict import (
    AccessType,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from pfsfuse.metadata import records
from pfsfuse.metadata.errors import DataLoss
from pfsfuse.metadata.records import Page

# Column families. New kinds may be added freely: missing ones are created on open.
COLUMN_FAMILIES = (
    "meta",  # store-wide settings
    "repos",  # name -> Repo
    "branches",  # repo \0 branch -> Branch
    "commits",  # repo \0 id(16 bytes, time ordered) -> Commit
    "pages",  # hash -> encoded Page, or a blob (an out-of-line chunk list)
    "chunks",  # chunk hash -> chunk location (opaque to this layer)
    "subvenance",  # upstream commit key + downstream commit key -> b""
    "gc",  # garbage collection: unindexed pack id -> when first seen (opaque to this layer)
    "etags",  # repo + content hash -> S3 ETag (metadata/etags.py)
)


def _options(raw: bool = True) -> Options:
    opt = Options(raw_mode=raw)
    opt.create_if_missing(True)
    opt.create_missing_column_families(True)
    opt.set_compression_type(DBCompressionType.lz4())
    opt.set_bottommost_compression_type(DBCompressionType.zstd())
    opt.increase_parallelism(2)
    opt.set_keep_log_file_num(3)
    # Let the kernel read ahead in the index's files. A lookup's lone read is still read as it is
    # (the kernel reads ahead only where the pages before are cached), but a listing of a big
    # directory, whose leaves lie scattered over most of a file, then costs a few large reads
    # instead of one per block: 1,000,000 names' leaves cold in 0.5-0.6 s instead of 1.2 s.
    opt.set_advise_random_on_open(False)
    return opt


class DB:
    """The open index. Thread-safe for reads; writes go through `Txn`, serialised by `lock`."""

    def __init__(self, path: str, seed: int, *, read_only: bool = False):
        self.path = path
        # Tree pages get their own hash domain, apart from chunk ids, so that no file's bytes can
        # ever share an address with a page.
        self._seed = xxhash.xxh3_64_intdigest(b"pfsfuse tree pages", seed=seed)
        os.makedirs(path, exist_ok=True)
        names = set(COLUMN_FAMILIES)
        if os.path.exists(os.path.join(path, "CURRENT")):
            names.update(Rdict.list_cf(path, _options()))
        names.discard("default")
        access = AccessType.read_only() if read_only else AccessType.read_write()
        self._db = Rdict(
            path,
            _options(),
            column_families={n: _options() for n in names},
            access_type=access,
        )
        self._cfs = {n: self._db.get_column_family(n) for n in names}
        self._handles = {n: self._db.get_column_family_handle(n) for n in names}
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()
        # Every mutation is read-modify-write of a few records; one writer at a time keeps that
        # simple and RocksDB serialises writes anyway.
        self.lock = threading.RLock()
        # Decoded, a leaf of about 31 file entries holds about 20 KiB: 2,048 pages bound the
        # cache near 45 MB whatever the directories' sizes (16,384 held 380 MB after listing a
        # directory of 1,000,000 files; RocksDB's block cache keeps the bytes of more).
        self.page = functools.lru_cache(maxsize=1 << 11)(self._load_page)
        # While a garbage collection runs: every page and blob written (under `lock`), which it
        # must keep even if no commit it saw refers to them.
        self.written: set[bytes] | None = None

    def ensure_column_families(self, *names: str) -> None:
        """Open (creating if needed) column families a layer above keeps its own records in."""
        with self.lock:
            for n in names:
                if n not in self._cfs:
                    self._cfs[n] = self._db.create_column_family(n, _options())
                    self._handles[n] = self._db.get_column_family_handle(n)

    def close(self) -> None:
        # RocksDB keeps its lock while any column family handle is alive.
        self._cfs.clear()
        self._handles.clear()
        self.page.cache_clear()
        self._db.close()
        del self._db

    def hash(self, data) -> bytes:
        """The store's keyed 128-bit content hash (the seed keeps addresses unsteerable)."""
        return xxhash.xxh3_128_digest(data, seed=self._seed)

    # -- reads -------------------------------------------------------------------------------

    def get(self, cf: str, key: bytes) -> bytes | None:
        return self._cfs[cf].get(key)

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        """The values of `keys`, in one read (a multi-get)."""
        wanted: list[str | int | float | bytes | bool] = list(keys)
        return (self._cfs[cf].get(wanted) or []) if keys else []

    def exists(self, cf: str, key: bytes) -> bool:
        return self._cfs[cf].get(key) is not None

    def scan(
        self, cf: str, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with `prefix`, in key order (or reversed), from `start`."""
        ro = ReadOptions()
        if prefix:
            ro.set_iterate_lower_bound(prefix)
            upper = _prefix_end(prefix)
            if upper is not None:
                ro.set_iterate_upper_bound(upper)
        it = self._cfs[cf].iter(ro)
        if reverse:
            if start is not None:
                it.seek_for_prev(start)
            else:
                it.seek_to_last()
        else:
            it.seek(start if start is not None else prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):  # rocksdict does not keep to the bounds in reverse
                return
            yield key, it.value()
            if reverse:
                it.prev()
            else:
                it.next()

    def _load_page(self, h: bytes) -> Page:
        data = self._cfs["pages"].get(h)
        if data is None:
            raise DataLoss(f"tree page {h.hex()} is missing from the index")
        return records.decode(Page, data)

    def blob(self, h: bytes) -> bytes:
        data = self._cfs["pages"].get(h)
        if data is None:
            raise DataLoss(f"chunk list {h.hex()} is missing from the index")
        return data

    def stored_pages(self, hashes: list[bytes]) -> list[bytes]:
        """Tree pages as stored, undecoded, in one read (for a reader that decodes them itself).
        ValueError for a hash that is a chunk list's."""
        keys: list[str | int | float | bytes | bool] = list(hashes)
        found = self._cfs["pages"].get(keys) or []  # a multi-get
        for h, data in zip(hashes, found, strict=True):
            if data is None:
                raise DataLoss(f"tree page {h.hex()} is missing from the index")
            if not records.is_page(data):
                raise ValueError(f"{h.hex()} is not a tree page")
        return found

    def txn(self) -> Txn:
        return Txn(self)

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        """Applies a batch atomically. sync=False skips flushing the WAL: the batch survives a
        crash of this process but not of the machine, until any later synced write (the WAL is
        sequential, so that flush covers it too)."""
        self._db.write(batch, self._sync if sync else self._nosync)

    def handle(self, cf: str):
        return self._handles[cf]


class Txn:
    """One atomic write batch, with read-your-writes for the pages and blobs it creates."""

    def __init__(self, db: DB):
        self.db = db
        self.hash = db.hash
        self._batch = WriteBatch(raw_mode=True)
        self._pages: dict[bytes, Page] = {}
        self._blobs: dict[bytes, bytes] = {}

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._batch.put(key, value, self.db.handle(cf))

    def delete(self, cf: str, key: bytes) -> None:
        self._batch.delete(key, self.db.handle(cf))

    def page(self, h: bytes) -> Page:
        p = self._pages.get(h)
        return p if p is not None else self.db.page(h)

    def blob(self, h: bytes) -> bytes:
        b = self._blobs.get(h)
        return b if b is not None else self.db.blob(h)

    def put_page(self, page: Page) -> bytes:
        data = records.encode(page)
        h = self.db.hash(data)
        if h not in self._pages:
            self._pages[h] = page
            self._put_page(h, data)
        return h

    def put_blob(self, data: bytes) -> bytes:
        h = self.db.hash(data)
        if h not in self._blobs:
            self._blobs[h] = data
            self._put_page(h, data)
        return h

    def _put_page(self, h: bytes, data: bytes) -> None:
        written = self.db.written
        if written is not None:
            written.add(h)
        self.put("pages", h, data)

    @property
    def new_bytes(self) -> int:
        return self._batch.size_in_bytes()

    def commit(self, sync: bool = True) -> None:
        if not self._batch.is_empty():
            self.db.write(self._batch, sync)
        self._batch = WriteBatch(raw_mode=True)


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)
