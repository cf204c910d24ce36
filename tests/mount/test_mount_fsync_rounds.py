"""fsync through the mount keeps its promise: after random pwrites, truncates and fsyncs, every
fsync that returned left the daemon holding exactly what a plain file holds at that moment; the
files read back the same after a remount, and after a kill -9 of the mount in the middle of a
writer's rounds every fsynced byte is there and `pfs fsck` passes. The same holds for a big
committed file written in place (a sparse copy on write), read as it is written."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import fuse_unavailable, wait_for

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.slow,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]

KiB = 1 << 10
MiB = 1 << 20


def _ops_over(offsets, longest_write: int, longest_read: int, most: int):
    """Lists of writes, reads (none if `longest_read` is 0), fsyncs, truncates and reopens at
    `offsets`."""
    steps = [st.tuples(st.just("write"), offsets, st.integers(1, longest_write))]
    if longest_read:
        steps.append(st.tuples(st.just("read"), offsets, st.integers(1, longest_read)))
    steps += [st.tuples(st.just("fsync")), st.tuples(st.just("truncate"), offsets), st.tuples(st.just("reopen"))]
    return st.lists(st.one_of(*steps), min_size=1, max_size=most)


# Offsets near the start and past the 8 MiB at which the mount keeps a file on disk, not in memory.
_offsets = st.one_of(st.integers(0, 64 * KiB), st.integers(8 * MiB - 8 * KiB, 9 * MiB))
_ops = _ops_over(_offsets, 16 * KiB, 0, 12)


def test_random_pwrites_and_fsyncs_match_a_plain_file(daemon, view, mounts, mnt, tmp_home):
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b"x"})
    m = mounts("--idle", "3600")  # nothing reaches the daemon but what fsync (or a close) sends
    branch = mnt / "r" / "master"
    plain_dir = tmp_home / "plain"
    plain_dir.mkdir()
    expected: dict[str, bytes] = {}
    examples = iter(range(1_000_000))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=_ops, seed=st.integers(0, 2**32))
    # Closed, opened again and fsynced: the put logged at the close must not hold up the fsync's.
    @example(ops=[("write", 0, 10), ("reopen",), ("write", 5, 10), ("fsync",)], seed=1)
    def rounds(ops, seed):
        name = f"f{next(examples)}.bin"
        rng = random.Random(seed)
        ours = os.open(branch / name, os.O_RDWR | os.O_CREAT, 0o644)
        plain = os.open(plain_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for op in ops:
                ours = _step(op, ours, plain, rng, view, branch / name)
            os.fsync(ours)
            assert view.read("r", "master", name) == _content(plain)
            assert (branch / name).read_bytes() == _content(plain)
            expected[name] = _content(plain)
        finally:
            os.close(ours)
            os.close(plain)

    rounds()
    m.unmount()
    mounts("--idle", "3600")  # a new mount process reads what the daemon kept
    for name, want in expected.items():
        assert (branch / name).read_bytes() == want, name
    fsck = daemon.pfs("fsck", check=False)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()


def _step(op: tuple, ours: int, plain: int, rng: random.Random, view, path) -> int:
    """Apply `op` to the file open in the mount (`ours`, at `path` of r@master) and to the plain
    one; the descriptor of ours from then on (a reopen changes it). An fsync checks what the
    daemon holds, a read what the mount reads."""
    if op[0] == "write":
        data = rng.randbytes(op[2])
        assert os.pwrite(ours, data, op[1]) == len(data)
        os.pwrite(plain, data, op[1])
    elif op[0] == "read":
        assert os.pread(ours, op[2], op[1]) == os.pread(plain, op[2], op[1]), f"read at {op[1]}"
    elif op[0] == "truncate":
        os.ftruncate(ours, op[1])
        os.ftruncate(plain, op[1])
    elif op[0] == "reopen":
        os.close(ours)
        return os.open(path, os.O_RDWR)
    else:
        os.fsync(ours)
        want = _content(plain)
        got = view.read("r", "master", path.name)
        assert got == want, f"after fsync the daemon holds {len(got)} bytes, the file {len(want)}"
    return ours


def _content(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


# A writer's rounds: round k makes pwrites drawn from Random(k) and fsyncs; after each fsync it
# records k in the ack file (on the disk, fsynced).
_ROUNDS = textwrap.dedent(
    """
    import os, random

    def apply_round(k, write):
        rng = random.Random(k)
        for _ in range(rng.randrange(1, 40)):
            off = rng.choice([rng.randrange(0, 256 * 1024), rng.randrange(8 * 2**20, 9 * 2**20)])
            write(rng.randbytes(rng.randrange(1, 8192)), off)
    """
)
_WRITER = _ROUNDS + textwrap.dedent(
    """
    import sys
    target, ack = sys.argv[1], sys.argv[2]
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    acked = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for k in range(1, 10_000):
        apply_round(k, lambda data, off: os.pwrite(fd, data, off))
        os.fsync(fd)
        os.write(acked, b"%d\\n" % k)
        os.fsync(acked)
    """
)


def _state_after(k: int) -> bytes:
    scope: dict = {}
    exec(_ROUNDS, scope)
    buf = bytearray()

    def write(data: bytes, off: int) -> None:
        if off > len(buf):
            buf.extend(bytes(off - len(buf)))
        buf[off : off + len(data)] = data

    for i in range(1, k + 1):
        scope["apply_round"](i, write)
    return bytes(buf)


def _acked(path) -> int:
    try:
        lines = path.read_bytes().split()
    except FileNotFoundError:
        return 0
    return int(lines[-1]) if lines else 0


def test_kill_9_of_the_mount_loses_no_fsynced_byte(daemon, view, mounts, mnt, tmp_home):
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b"x"})
    m = mounts("--idle", "3600")
    ack = tmp_home / "acked"
    at = random.Random().randrange(3, 12)  # a random moment: some rounds in, one in flight
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(mnt / "r" / "master" / "db.bin"), str(ack)],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _acked(ack) >= at, 120, proc=writer, what=f"the writer to fsync {at} rounds")
        m.kill9()
        writer.wait(timeout=30)  # its next call fails: the mount is gone
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    done = _acked(ack)
    fsck = daemon.pfs("fsck", check=False)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
    kept = view.read("r", "master", "db.bin")
    # The last round acknowledged is there; the one in flight may be too (its fsync may have
    # reached the daemon before the kill), and nothing else.
    assert kept in (_state_after(done), _state_after(done + 1)), f"{done} rounds fsynced: the daemon has other bytes"
    m.unmount()
    mounts("--idle", "3600")
    assert (mnt / "r" / "master" / "db.bin").read_bytes() == kept


# Offsets over a committed file of 12 MiB (copied on write sparsely: past the 8 MiB the mount
# keeps in memory), its end, and past it.
_big_offsets = st.one_of(st.integers(0, 12 * MiB + 64 * KiB), st.integers(12 * MiB - 8 * KiB, 12 * MiB + 8 * KiB))
_big_ops = _ops_over(_big_offsets, 300 * KiB, 2 * MiB, 10)


def test_a_committed_big_file_written_in_place_matches_a_plain_file(daemon, view, mounts, mnt, tmp_home):
    """The first write to a big committed file copies none of it: what is read of it comes from
    the committed file, what is fsynced or closed is stored from the ranges written and the
    committed file's chunks. Reads, writes, truncates, fsyncs and reopens in any order read back
    as a plain file does, and the closed file has put-file's content hash."""
    view.client.create_repo("r")
    m = mounts("--idle", "3600")
    branch = mnt / "r" / "master"
    plain_dir = tmp_home / "plain"
    plain_dir.mkdir()
    examples = iter(range(1_000_000))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=_big_ops, seed=st.integers(0, 2**32))
    @example(ops=[("write", 12 * MiB, 14), ("read", 0, 2 * MiB), ("fsync",)], seed=2)
    def rounds(ops, seed):
        name = f"big{next(examples)}.bin"
        rng = random.Random(seed)
        (plain_dir / name).write_bytes(rng.randbytes(12 * MiB))
        view.put_local("r", "master", name, plain_dir / name)
        wait_for(lambda: (branch / name).exists(), 10.0, what="the committed file in the mount")
        ours = os.open(branch / name, os.O_RDWR)
        plain = os.open(plain_dir / name, os.O_RDWR)
        try:
            for op in ops:
                ours = _step(op, ours, plain, rng, view, branch / name)
        finally:
            os.close(ours)
            os.close(plain)
        view.put_local("r", "plain", name, plain_dir / name)
        wait_for(  # (an fsync's put had the same bytes, finely cut: the close's comes after it)
            lambda: view.info("r", "master", name).hash == view.info("r", "plain", name).hash,
            10.0,
            what="the close's put, with put-file's chunks",
        )
        assert view.read("r", "master", name) == (plain_dir / name).read_bytes()

    rounds()
    m.unmount()
    fsck = daemon.pfs("fsck", check=False)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
