"""A put that names what changed since a stored file (a mount's fsync of a big file): the daemon
cuts again only the chunks the changes touch, and the file it stores is always the local file's
bytes, whatever the ranges, sizes and base."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storekit import MiB, change_steps, write_at

from pfsfuse.api.types import Put
from pfsfuse.chunks.chunker import FINE_MAX_SIZE, MAX_SIZE
from pfsfuse.metadata.errors import InvalidArgument


def _sync(store, path: str, local: str, since: bytes | None, changed: list[tuple[int, int]], final=False):
    """Put `local` at `path` as an fsync (or, `final`, a close) does; (the content hash stored,
    bytes of new chunks)."""
    r = store.write_files("r", "master", [Put(path, local=local, since=since, changed=changed, final=final)])
    [content] = r.contents
    assert bytes.fromhex(store.inspect_file("r", "master", path).hash) == content
    with open(local, "rb") as f:
        assert b"".join(store.get_file("r", "master", path)) == f.read()
    return content, r.stored


def test_small_writes_store_the_chunks_they_touch_then_fine_ones(store, tmp_path):
    store.create_repo("r")
    rng = random.Random(7)
    local = str(tmp_path / "big")
    with open(local, "wb") as f:
        f.write(rng.randbytes(40 * MiB))
    base, stored = _sync(store, "big", local, None, [])
    assert stored >= 40 * MiB  # the first put stores the file whole, random bytes

    offsets = [rng.randrange(40 * MiB - 4096) for _ in range(3)]
    changed = [write_at(local, off, rng.randbytes(4096)) for off in offsets]
    base, stored = _sync(store, "big", local, base, changed)
    assert stored <= 3 * MAX_SIZE, "more than the chunks the writes touch was stored"

    # The same places again: the chunks there are fine now.
    changed = [write_at(local, off + 100, rng.randbytes(4096)) for off in offsets]
    base, stored = _sync(store, "big", local, base, changed)
    assert stored <= 3 * 2 * FINE_MAX_SIZE

    # Unchanged: nothing new.
    assert _sync(store, "big", local, base, [])[1] == 0


def test_a_base_that_is_not_the_stored_file_reads_the_file_whole(store, tmp_path):
    store.create_repo("r")
    local = str(tmp_path / "f")
    with open(local, "wb") as f:
        f.write(random.Random(1).randbytes(6 * MiB))
    _sync(store, "f", local, None, [])
    write_at(local, 5 * MiB, b"not in the ranges")
    # A wrong base (another writer replaced the file, or the caller lost track): ranges ignored.
    _, stored = _sync(store, "f", local, b"\x01" * 16, [])
    assert stored > 0
    # Nothing stored at the path yet: the same.
    _sync(store, "g", local, b"\x01" * 16, [(0, 1)])


def test_changed_ranges_describe_a_whole_file_only(store, tmp_path):
    store.create_repo("r")
    local = tmp_path / "f"
    local.write_bytes(b"a\nb\n")
    with pytest.raises(InvalidArgument, match="changed ranges"):
        store.write_files("r", "master", [Put("f", local=str(local), split="line", changed=[])])
    with pytest.raises(InvalidArgument, match="changed ranges"):
        store.write_files("r", "master", [Put("f", local=str(local), append=True, changed=[])])


def _stored_random_file(store, tmp_path, name: str, rng: random.Random, most: int) -> tuple[str, bytes]:
    """A local file of up to `most` random bytes, stored at `name` of r@master: (its path, the
    content hash stored)."""
    if "r" not in [r.name for r in store.list_repo()]:
        store.create_repo("r")
    local = str(tmp_path / name)
    with open(local, "wb") as f:
        f.write(rng.randbytes(rng.randrange(most)))
    return local, _sync(store, name, local, None, [])[0]


def _change(local: str, step: tuple, rng: random.Random) -> tuple[int, int]:
    """Apply a ("write", offset, length) or ("truncate", size) step to `local`; the (offset,
    length) it changed."""
    if step[0] == "write":
        return write_at(local, step[1], rng.randbytes(step[2]))
    size = os.path.getsize(local)
    os.truncate(local, step[1])
    return min(size, step[1]), abs(size - step[1])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=change_steps, seed=st.integers(0, 2**32))
def test_every_sync_stores_the_local_file_whatever_was_written(store, tmp_path, steps, seed):
    """Writes, truncates (shrinking and growing) and syncs in any order: each sync's file reads
    back as the local file, its ranges being all the writes and truncates since the last sync."""
    rng = random.Random(seed)
    local, base = _stored_random_file(store, tmp_path, f"f{seed}", rng, 6 * MiB)
    changed: list[tuple[int, int]] = []
    for step in [*steps, ("sync",)]:
        if step[0] == "sync":
            base, _ = _sync(store, f"f{seed}", local, base, changed)
            changed = []
        else:
            changed.append(_change(local, step, rng))


def test_a_file_that_shrinks_while_its_changes_are_read_is_read_whole(store, tmp_path, monkeypatch):
    """The daemon plans from the file's size, then reads: a truncate in between (the writer goes
    on while an fsync is sent) leaves a range short. The chunks kept after it would sit at the
    wrong offsets, so the file is read whole instead."""
    store.create_repo("r")
    local = str(tmp_path / "f")
    with open(local, "wb") as f:
        f.write(random.Random(2).randbytes(8 * MiB))
    base, _ = _sync(store, "f", local, None, [])
    changed = [write_at(local, 5 * MiB, b"x" * 100)]
    os.truncate(local, 3 * MiB)  # after the daemon's fstat, which still sees 8 MiB
    real = os.fstat

    def fstat_before_the_truncate(fd):
        st = real(fd)
        if os.readlink(f"/proc/self/fd/{fd}") == local:
            return os.stat_result(
                (*st[:6], 8 * MiB, *st[7:]), {k: getattr(st, k) for k in dir(st) if k.startswith("st_")}
            )
        return st

    monkeypatch.setattr(os, "fstat", fstat_before_the_truncate)
    _sync(store, "f", local, base, changed)


def test_a_kept_chunk_no_longer_indexed_is_stored_again(store, tmp_path, monkeypatch):
    """A chunk of the stored file was collected (or lost) before the fsync came: the daemon must
    not refer to it. It reads the file whole, and stores every chunk it then needs, the missing
    one too (claiming it for the fsync must not make it look stored already)."""
    store.create_repo("r")
    local = str(tmp_path / "f")
    with open(local, "wb") as f:
        f.write(random.Random(4).randbytes(8 * MiB))
    base, _ = _sync(store, "f", local, None, [])
    asked: list[list[bytes]] = []

    def none_indexed(hashes):
        asked.append(hashes)
        return False

    monkeypatch.setattr(store, "all_indexed", none_indexed)
    monkeypatch.setattr(store, "indexed", lambda h: False)
    _, stored = _sync(store, "f", local, base, [write_at(local, MiB, b"y" * 10)])
    assert asked and asked[0], "the kept chunks were not checked"
    assert stored >= 8 * MiB, "chunks taken for stored were not stored again"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=change_steps, seed=st.integers(0, 2**32))
def test_a_final_put_stores_put_files_chunks_cutting_only_around_the_changes(store, tmp_path, steps, seed):
    """A close after writes, truncates and appends: the file gets the chunks, and so the content
    hash, that put-file gives the same bytes (what pipelines and diffs compare), though only the
    chunks around the changes were cut again."""
    rng = random.Random(seed)
    local, base = _stored_random_file(store, tmp_path, f"f{seed}", rng, 12 * MiB)
    changed = [_change(local, step, rng) for step in steps if step[0] != "sync"]
    content, _ = _sync(store, f"f{seed}", local, base, changed, final=True)
    whole, _ = _sync(store, f"whole{seed}", local, None, [])
    assert content == whole, "the close's chunks are not put-file's"


class _Counting:
    """The store's chunker, counting the bytes it cuts."""

    def __init__(self, chunker):
        self.chunker, self.bytes = chunker, 0

    def _count(self, pieces):
        for p in pieces:
            self.bytes += len(p)
            yield p

    def cut(self, *args, **kwargs):
        return self._count(self.chunker.cut(*args, **kwargs))

    def cut_file(self, *args, **kwargs):
        return self._count(self.chunker.cut_file(*args, **kwargs))


def test_a_final_put_after_a_small_change_cuts_little(store, tmp_path, monkeypatch):
    """A close after a small write and an append cuts the chunks around them (and as far on as
    put-file's cuts take to meet the kept ones again), not the file."""
    store.create_repo("r")
    rng = random.Random(5)
    local = str(tmp_path / "big")
    with open(local, "wb") as f:
        f.write(rng.randbytes(40 * MiB))
    base, _ = _sync(store, "big", local, None, [])
    with open(local, "ab") as f:
        f.write(b"one more line\n")
    changed = [write_at(local, 20 * MiB, b"x" * 100), (40 * MiB, 14)]
    counting = _Counting(store.chunks.chunker)
    monkeypatch.setattr(store.chunks, "chunker", counting)
    _sync(store, "big", local, base, changed, final=True)
    assert 0 < counting.bytes <= 6 * MAX_SIZE, f"a close of a small change cut {counting.bytes} bytes"
