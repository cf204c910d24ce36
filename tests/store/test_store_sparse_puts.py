"""A sparse put (a mount's copy on write of a big file that it never copied): the writer's file
holds only the ranges written since the copy, and the daemon reads the rest from the stored file's
chunks. Here the writer's file holds poison wherever it was not written, so any read of it
outside the named ranges shows in the stored bytes."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storekit import MiB, change_steps, write_at

from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import BaseChanged, InvalidArgument

POISON = b"\xee"


class _Copy:
    """The same writes and truncates on the whole file (`truth`) and on a sparse copy of it
    (`sparse`: poison where nothing was written since the copy)."""

    def __init__(self, tmp_path, name: str, origin: bytes):
        self.truth, self.sparse = str(tmp_path / f"{name}.truth"), str(tmp_path / f"{name}.sparse")
        with open(self.truth, "wb") as f:
            f.write(origin)
        with open(self.sparse, "wb") as f:
            f.write(POISON * len(origin))
        self.since_sync: list[tuple[int, int]] = []  # changed since the last put
        self.since_copy: list[tuple[int, int]] = []  # changed since the copy

    def write(self, off: int, data: bytes) -> None:
        for path in (self.truth, self.sparse):
            write_at(path, off, data)
        self._mark(off, len(data))

    def truncate(self, size: int) -> None:
        old = os.path.getsize(self.truth)
        for path in (self.truth, self.sparse):
            os.truncate(path, size)
        self._mark(min(old, size), abs(old - size))

    def _mark(self, off: int, n: int) -> None:
        self.since_sync.append((off, n))
        self.since_copy.append((off, n))

    def content(self) -> bytes:
        with open(self.truth, "rb") as f:
            return f.read()


def _put(store, path: str, copy: _Copy, since: bytes, changed, **kwargs) -> bytes:
    """The sparse put of `copy` at `path`; the content hash stored, checked to read back as the
    whole file."""
    r = store.write_files(
        "r", "master", [Put(path, local=copy.sparse, since=since, changed=changed, sparse=True, **kwargs)]
    )
    [content] = r.contents
    assert b"".join(store.get_file("r", "master", path)) == copy.content(), (
        "a byte not written came from the writer's file"
    )
    return content


def _origin(store, tmp_path, name: str, data: bytes) -> tuple[_Copy, bytes, str]:
    """`data` stored at `name` by put-file: (a sparse copy of it, its content hash, its commit)."""
    if "r" not in [r.name for r in store.list_repo()]:
        store.create_repo("r")
    src = tmp_path / f"{name}.src"
    src.write_bytes(data)
    store.write_files("r", "master", [Put(name, local=str(src))])
    info = store.inspect_file("r", "master", name)
    return _Copy(tmp_path, name, data), bytes.fromhex(info.hash), store.inspect_commit("r", "master").id


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=change_steps, seed=st.integers(0, 2**32))
def test_sparse_puts_store_the_whole_file_and_the_close_stores_put_files_chunks(store, tmp_path, steps, seed):
    """Writes, truncates and fsyncs in any order, each fsync a sparse put of what changed since
    the last; then the close, a sparse put of all that changed since the copy, relative to the
    committed file copied: every put reads back as the whole file, and the close's content hash
    is put-file's of the same bytes."""
    rng = random.Random(seed)
    name = f"f{seed}"
    copy, base, origin_commit = _origin(store, tmp_path, name, rng.randbytes(rng.randrange(6 * MiB)))
    origin = base
    for step in steps:
        if step[0] == "sync":
            base = _put(store, name, copy, base, copy.since_sync)
            copy.since_sync = []
        elif step[0] == "write":
            copy.write(step[1], rng.randbytes(step[2]))
        else:
            copy.truncate(step[1])
    content = _put(store, name, copy, origin, copy.since_copy, since_ref=origin_commit, final=True)
    whole = tmp_path / f"{name}.whole"
    whole.write_bytes(copy.content())
    store.write_files("r", "master", [Put(f"{name}.whole", local=str(whole))])
    assert content == bytes.fromhex(store.inspect_file("r", "master", f"{name}.whole").hash)


def test_an_append_to_a_big_file_reads_only_the_end_of_it(store, tmp_path, monkeypatch):
    """Appending a line to a big committed file: the daemon reads the line and the stored file's
    last chunk, nothing else of either."""
    copy, base, commit = _origin(store, tmp_path, "big", random.Random(3).randbytes(40 * MiB))
    copy.write(40 * MiB, b"one more line\n")
    read: list[int] = []
    real = store.read_chunks

    def counting(refs, offset=0, length=None):
        for piece in real(refs, offset, length):
            read.append(len(piece))
            yield piece

    monkeypatch.setattr(store, "read_chunks", counting)
    put = Put("big", local=copy.sparse, since=base, changed=copy.since_copy, since_ref=commit, final=True, sparse=True)
    store.write_files("r", "master", [put])
    assert 0 < sum(read) <= 8 * MiB, f"the close read {sum(read)} bytes of the stored file"
    assert b"".join(store.get_file("r", "master", "big")) == copy.content()


def test_a_sparse_put_whose_file_moved_is_refused_and_changes_nothing(store, tmp_path):
    """Another writer replaced the file since the copy: the daemon cannot read the bytes the
    writer does not hold, so it refuses the put (the writer then sends the file whole)."""
    copy, base, commit = _origin(store, tmp_path, "f", random.Random(4).randbytes(3 * MiB))
    copy.write(10, b"mine")
    other = tmp_path / "other"
    other.write_bytes(b"someone else's")
    store.write_files("r", "master", [Put("f", local=str(other))])
    with pytest.raises(BaseChanged):
        store.write_files(
            "r", "master", [Put("f", local=copy.sparse, since=base, changed=copy.since_copy, sparse=True)]
        )
    assert b"".join(store.get_file("r", "master", "f")) == b"someone else's"
    # Relative to the commit it was copied from, it can still go.
    _put(store, "f", copy, base, copy.since_copy, since_ref=commit, final=True)


def test_a_sparse_put_needs_its_base(store, tmp_path):
    store.create_repo("r")
    local = tmp_path / "f"
    local.write_bytes(b"x")
    for put in (Put("f", local=str(local), sparse=True), Put("f", local=str(local), since_ref="master", changed=[])):
        with pytest.raises(InvalidArgument, match="sparse"):
            store.write_files("r", "master", [put])
