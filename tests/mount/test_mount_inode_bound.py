"""The mount holds a bounded number of inodes: past `PFS_MOUNT_INODES` it asks the kernel to drop
the oldest names, the kernel forgets them, and what is looked up again afterwards reads the same
(same inode numbers, same sizes and bytes). The listing-prefetch windows are bounded too."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import cast

import pytest
import trio

from helpers import PFS, fuse_unavailable, wait_for
from pfsfuse.api.types import Put
from pfsfuse.metadata.records import ChunkRef, FileNode
from pfsfuse.mount import inodes as inodes_mod
from pfsfuse.mount import reading
from pfsfuse.mount.trees import Trees


def _table_past_its_bound() -> tuple[inodes_mod.InodeTable, inodes_mod.Inode, list[inodes_mod.Inode]]:
    """A table of 100 entry inodes, and then one more: the directory d, its files (the first a
    hard link), in the order they were made."""
    table = inodes_mod.InodeTable(kept=100)
    d = table.of("entry", "r", "master", "d")
    made = [table.of("entry", "r", "master", f"d/f{i:03d}") for i in range(99)]
    table.linked("r", "master", "d/f000", linkid=7)  # a hard link: never dropped by one name
    made.append(table.of("entry", "r", "master", "d/f099"))  # one over: the oldest quarter goes
    return table, d, made


def test_the_oldest_inodes_are_pruned_past_the_bound(monkeypatch):
    pruned: list[list[int]] = []
    monkeypatch.setattr(inodes_mod.pyfuse3, "notify_prune", pruned.append, raising=False)
    monkeypatch.setattr(inodes_mod, "PRUNE_BATCH", 10)
    table, d, made = _table_past_its_bound()
    # The oldest 25 go but the link: d (the kernel keeps it while any name below is in use), f001...
    oldest = [d.ino] + [m.ino for m in made[1:24]]
    assert pruned == [oldest[:10], oldest[10:20], oldest[20:]]
    # The kernel forgets what it dropped; a name looked up again gets its number back.
    first = made[5]
    first.lookups = 1
    table.forget([(first.ino, 1)])
    assert first.ino not in table
    assert table.of("entry", "r", "master", "d/f005").ino == first.ino
    assert len(table) == 1 + 1 + 100  # the root, d, and its files
    assert d.ino in table
    # What a prune left (in use, or not yet linked by the kernel) is pruned again later; what
    # the kernel forgot is not asked for again.
    gone = made[6]
    gone.lookups = 1
    table.forget([(gone.ino, 1)])
    for i in range(100, 400):
        table.of("entry", "r", "master", f"d/f{i:03d}")
    asked = [ino for batch in pruned for ino in batch]
    assert asked.count(made[1].ino) >= 2 and asked.count(gone.ino) == 1
    assert made[0].ino not in asked  # the hard link


def test_a_kernel_that_cannot_prune_is_asked_to_drop_names(monkeypatch):
    """Before Linux 6.18 (or with an unpatched pyfuse3) each name is invalidated instead."""
    tried: list[list[int]] = []

    def refused(inodes: list[int]) -> None:
        tried.append(inodes)
        raise OSError(22, "Invalid argument")

    asked: list[tuple[int, bytes]] = []
    monkeypatch.setattr(inodes_mod.pyfuse3, "notify_prune", refused, raising=False)
    monkeypatch.setattr(
        inodes_mod.pyfuse3, "invalidate_entry_async", lambda ino, name, ignore_enoent: asked.append((ino, name))
    )
    table, d, _ = _table_past_its_bound()
    # d has no name to invalidate (the kernel was never shown its directory).
    assert asked == [(d.ino, f"f{i:03d}".encode()) for i in range(1, 24)]
    assert len(tried) == 1
    for i in range(100, 130):  # the next shed goes straight to invalidation
        table.of("entry", "r", "master", f"d/f{i:03d}")
    assert len(tried) == 1 and len(asked) == 23 + 25


class _Nursery:
    def __init__(self):
        self.started: list = []

    def start_soon(self, fn, *args):
        self.started.append(args)


async def _no_io(*args):
    raise AssertionError("no I/O here")


class _Trees:
    def cached_chunk(self, h: bytes) -> None:
        return None


def test_listed_windows_waiting_for_readers_are_bounded(monkeypatch):
    monkeypatch.setattr(reading, "LISTED_PENDING", 5000)
    r = reading.Reader(cast(Trees, _Trees()), _no_io)
    r.nursery = cast(trio.Nursery, _Nursery())

    def page(p: int) -> list[tuple[str, FileNode]]:
        out = []
        for i in range(1000):
            c = ChunkRef(b"%04d%06d" % (p, i) + b"\0" * 6, 10)
            out.append((f"f{i}", FileNode(10, c.hash, (c,))))
        return out

    for p in range(40):  # 40 pages of a big directory's listing, 744 entries waiting each
        r.prefetch_listed(page(p))
        waiting = sum(rest.left for rest in r._next_window.values())
        assert waiting == r._pending <= 5000 + 744
    newest = page(39)[reading.LISTED_WINDOW // 2][1]
    assert isinstance(newest, FileNode) and newest.chunks
    assert newest.chunks[0].hash in r._next_window  # the newest listing's next window is kept


@pytest.mark.fuse
@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_a_mount_past_its_inode_bound_reads_the_same(daemon, mounts, tmp_home):
    n = 1500
    client = daemon.client()
    try:
        client.create_repo("r")
        client.write_files("r", "master", (Put(f"d/f{i:05}", stream=io.BytesIO(b"x" * (i % 97))) for i in range(n)))
        commit = client.inspect_commit("r", "master").id
    finally:
        client.close()
    daemon.env["PFS_MOUNT_INODES"] = "200"
    try:
        m = mounts("--read-only")
    finally:
        del daemon.env["PFS_MOUNT_INODES"]
    mnt: Path = m.path
    for ref in ("master", commit):
        d = mnt / "r" / ref / "d"
        want = {f"f{i:05}": i % 97 for i in range(n)}
        for _ in range(2):  # the second walk looks up again what the first had dropped
            found = subprocess.run(["find", str(d), "-type", "f", "-printf", "%f %s %i\n"], capture_output=True)
            assert found.returncode == 0, found.stderr
            rows = [line.split() for line in found.stdout.decode().splitlines()]
            assert {name: int(size) for name, size, _ in rows} == want
            numbers = {name: int(ino) for name, _, ino in rows}
            assert numbers == {name: os.stat(d / name).st_ino for name in want}  # the same numbers
        for i in range(0, n, 101):
            assert (d / f"f{i:05}").read_bytes() == b"x" * (i % 97)
    # The kernel forgot what it was asked to drop: the mount holds about its bound.
    wait_for(lambda: int(os.getxattr(mnt, "user.pfs.inodes")) <= 200 + 50, 30, what="the kernel to forget")


def test_a_bad_inode_bound_is_refused_in_one_line(daemon, tmp_home):
    env = {**daemon.env, "PFS_MOUNT_INODES": "lots"}
    mnt = tmp_home / "mnt-bad"
    r = subprocess.run([PFS, "mount", str(mnt)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "PFS_MOUNT_INODES='lots'" in r.stderr and "Traceback" not in r.stderr
