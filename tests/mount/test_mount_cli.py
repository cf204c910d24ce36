"""`pfs mount` / `pfs unmount` as a user runs them: readiness, foreground mode, bad input, several
mounts, and a kill -9 of the mount process."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess

import pytest
from mountkit import sh

from helpers import PFS, Daemon, Mount, fuse_processes, fuse_unavailable, is_mounted, wait_for

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


def test_mount_returns_once_usable_and_unmount_cleans_up(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    m = mounts()
    # No polling here: `pfs mount` returns only once the mount is usable.
    assert (mnt / "r" / "master" / "a.txt").read_bytes() == b"A"
    assert m.pid is not None, "no process holding /dev/fuse for this mount was found"
    m.unmount()
    assert not is_mounted(mnt)
    wait_for(lambda: not m.alive(), 20, what="the mount process to exit after pfs unmount")
    assert os.listdir(mnt) == [], "the mount point is empty again"


@pytest.mark.skipif(os.geteuid() != 0, reason="detaching a busy mount (umount -l) needs root")
def test_unmount_of_a_busy_mount_detaches_it_and_loses_no_write(daemon, view, mounts, mnt):
    """A file still open for writing: `pfs unmount` returns at once with a note, the name is
    free, and what is written until the file is closed lands in the mount's commit."""
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    m = mounts("--idle", "3600")
    with open(mnt / "r" / "master" / "held.txt", "wb", buffering=0) as held:
        held.write(b"before the unmount\n")
        r = m.unmount(check=False)
        assert r.returncode == 0, r.stderr
        assert b"still open" in r.stderr and b"Traceback" not in r.stderr, r.stderr
        assert not is_mounted(mnt)
        assert m.alive(), "the mount process went while a file was open in it"
        held.write(b"after it\n")
    wait_for(lambda: not m.alive(), 30, what="the mount process to exit once the file is closed")
    head = view.head("r", "master")
    assert head.finished is not None
    assert view.read("r", head.id, "held.txt") == b"before the unmount\nafter it\n"


def test_foreground_mount_stays_attached_and_exits_on_unmount(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    m = mounts(foreground=True)
    assert m.proc is not None and m.proc.poll() is None
    assert (mnt / "r" / "master" / "a.txt").read_bytes() == b"A"
    m.unmount()
    assert m.proc.wait(timeout=20) == 0


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert r.returncode != 0, f"pfs mount should have failed: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"the error should be one line on stderr, got: {err!r}"
    return lines[0]


def _leave_nothing(target, home) -> None:
    """After a failed expectation: unmount and kill what `pfs mount` left (only processes that
    carry this test's PFS_HOME or mount point)."""
    if is_mounted(target):
        subprocess.run(["fusermount3", "-u", "-z", str(target)], capture_output=True, timeout=30)
    for pid in fuse_processes(home, str(target)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("case", ["not-a-dir", "non-empty-dir", "unknown-repo-in-repos", "unknown-repo-in-c"])
def test_mount_refuses_bad_input_with_one_line(daemon, view, tmp_home, case):
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    target = tmp_home / "mnt"
    args: list[str] = []
    if case == "not-a-dir":
        target.write_text("a file")  # a missing directory is made (test_fidelity); a file is not one
    else:
        target.mkdir()
    if case == "non-empty-dir":
        (target / "something").write_text("here")
    if case == "unknown-repo-in-repos":
        args = ["--repos", "r,nosuchrepo"]
    if case == "unknown-repo-in-c":
        args = ["-c", "nosuchrepo:master"]
    try:
        r = subprocess.run([PFS, "mount", str(target), *args], env=daemon.env, capture_output=True, timeout=60)
        line = _one_line_error(r)
        if case.startswith("unknown-repo"):
            assert "nosuchrepo" in line, f"the error should name the repo: {line}"
        assert not is_mounted(target), "nothing may be left mounted after an error"
        assert fuse_processes(daemon.home, str(target)) == [], "no mount process may be left behind"
        if case == "non-empty-dir":
            assert (target / "something").read_text() == "here"
    finally:
        _leave_nothing(target, daemon.home)


def test_mount_with_an_unreachable_daemon_fails_with_one_line(tmp_home):
    target = tmp_home / "mnt"
    target.mkdir()
    home = tmp_home / "nohome"
    home.mkdir()
    # An explicit address nobody listens on: the CLI must not start a daemon of its own.
    env = {**os.environ, "PFS_HOME": str(home), "PFS_ADDRESS": f"unix:{home}/pfs.sock"}
    try:
        r = subprocess.run([PFS, "mount", str(target)], env=env, capture_output=True, timeout=60)
        _one_line_error(r)
        assert not is_mounted(target)
        assert fuse_processes(home, str(target)) == []
    finally:
        _leave_nothing(target, home)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private mount namespace",
)
def test_unmount_all_unmounts_every_mount(daemon, view, tmp_home):
    # `pfs unmount --all` unmounts every mount of its store, and a developer's machine may have
    # mounts of that store of its own: the whole test runs in a private mount namespace, where
    # unmounting the namespace's copies of other mounts does not touch the originals.
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    one, two = tmp_home / "one", tmp_home / "two"
    one.mkdir()
    two.mkdir()
    script = f"""
set -eu
{PFS} mount {one}
{PFS} mount {two} --read-only
test "$(cat {one}/r/master/a.txt)" = A
test "$(cat {two}/r/master/a.txt)" = A
{PFS} unmount --all
if grep -q -e ' {one} ' -e ' {two} ' /proc/self/mountinfo; then echo still mounted >&2; exit 1; fi
"""
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=daemon.env,
            capture_output=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        # The mount processes exit once unmounted (the namespace is gone with its last process).
        wait_for(lambda: fuse_processes(daemon.home) == [], 20, what="the mount processes to exit")
    finally:
        for pid in fuse_processes(daemon.home):  # only ours: they carry this test's PFS_HOME
            os.kill(pid, signal.SIGKILL)


def test_unmount_all_leaves_other_stores_mounts_alone(daemon, view, mounts, mnt, tmp_home):
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    mounts()
    other = Daemon(tmp_home / "other-home")
    theirs = tmp_home / "theirs"
    theirs.mkdir()
    try:
        other.start()
        with Mount(other, theirs):
            r = daemon.pfs("unmount", "-a")
            assert r.stdout.decode() == f"unmounted {mnt}\n"
            assert not is_mounted(mnt) and is_mounted(theirs)
            assert daemon.pfs("unmount", "--all").stdout == b"no mounts of this store to unmount\n"
            assert is_mounted(theirs)
    finally:
        try:
            other.stop()
        finally:
            other.kill()


def test_kill_9_of_the_mount_then_unmount_and_remount(daemon: Daemon, view, mounts, mnt):
    view.client.create_repo("r")
    first = view.put("r", "master", {"keep/a.txt": b"finished before the crash\n", "keep/b.bin": os.urandom(300_000)})
    before = view.files("r", first)
    m = mounts("--idle", "3600")
    # Writes in flight when the process dies: a closed file in the mount's open commit and a
    # file still open for writing.
    (mnt / "r" / "master" / "closed.txt").write_bytes(b"written, closed, not committed\n")
    held = open(mnt / "r" / "master" / "held.bin", "wb")
    held.write(os.urandom(1 << 20))
    held.flush()
    wait_for(lambda: view.head("r", "master").finished is None, 10, proc=m.process(), what="the mount to open a commit")
    try:
        m.kill9()
    finally:
        try:
            held.close()
        except OSError:
            pass  # the connection is gone: ENOTCONN on flush is what a dead mount answers
    assert is_mounted(mnt), "the kernel keeps a dead FUSE mount until it is unmounted"
    with pytest.raises(OSError) as e:
        os.listdir(mnt)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), e.value

    fsck = daemon.pfs("fsck", check=False)
    assert fsck.returncode == 0, fsck.stderr.decode()
    assert view.files("r", first) == before, "a finished commit changed"

    r = m.unmount()  # `pfs unmount` of a mount whose process died
    assert r.returncode == 0 and not is_mounted(mnt)

    again = mounts("--idle", "3600")
    assert (mnt / "r" / first / "keep" / "a.txt").read_bytes() == before["keep/a.txt"]
    assert (mnt / "r" / first / "keep" / "b.bin").read_bytes() == before["keep/b.bin"]
    assert (mnt / "r" / "master" / "keep" / "b.bin").read_bytes() == before["keep/b.bin"]
    # The remount writes into the commit the dead mount left open, and finishes it as its own.
    (mnt / "r" / "master" / "after.txt").write_bytes(b"after the crash\n")
    assert (mnt / "r" / "master" / "after.txt").read_bytes() == b"after the crash\n"
    again.unmount()
    head = view.head("r", "master")
    assert head.finished is not None, "the commit the dead mount left open is still open"
    assert view.read("r", head.id, "after.txt") == b"after the crash\n"
    assert view.files("r", first) == before
    fsck = sh(PFS, "fsck", env=daemon.env, check=False)
    assert fsck.returncode == 0, fsck.stderr.decode()


def test_unmount_of_a_dead_foreground_mount(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    m: Mount = mounts(foreground=True)
    assert (mnt / "r" / "master" / "a.txt").read_bytes() == b"A"
    m.kill9()
    m.unmount()
    assert not is_mounted(mnt)
    mounts()
    assert (mnt / "r" / "master" / "a.txt").read_bytes() == b"A"
