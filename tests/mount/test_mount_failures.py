"""What goes wrong under a mount: a branch deleted, files deleted while open, the daemon dying, a
full disk. Each gets a clear errno or carries on; none hangs the mount or loses a write."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess

import pytest
from mountkit import MiB

from helpers import fuse_unavailable, wait_for

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


def _errno_of(fn) -> int | None:
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def test_a_vanished_branch_goes_and_its_open_files_read_on(daemon, view, mounts, mnt):
    data = os.urandom(6 * MiB)
    view.client.create_repo("r")
    view.put("r", "master", {"keep.txt": b"kept\n"})
    view.client.create_branch("r", "feature", "master")
    view.put("r", "feature", {"f.bin": data})
    mounts()
    path = mnt / "r" / "feature" / "f.bin"
    with open(path, "rb", buffering=0) as f:
        head = f.read(MiB)
        view.client.delete_branch("r", "feature")
        wait_for(lambda: "feature" not in os.listdir(mnt / "r"), 5, what="the deleted branch to leave the listing")
        wait_for(lambda: not (mnt / "r" / "feature").exists(), 5, what="the deleted branch to be gone")
        rest = f.read()  # the commit it showed is still there, and so is what the handle reads
    assert head + rest == data
    assert _errno_of(lambda: open(path, "rb")) == errno.ENOENT
    assert (mnt / "r" / "master" / "keep.txt").read_bytes() == b"kept\n"


def test_a_file_deleted_while_open(daemon, view, mounts, mnt):
    data = os.urandom(3 * MiB)
    view.client.create_repo("r")
    view.put("r", "master", {"read.bin": data})
    m = mounts("--idle", "0.3")
    branch = mnt / "r" / "master"
    # Deleted by someone else (a commit of the daemon's) while it is being read: the handle reads
    # the version it opened; new opens no longer find it.
    with open(branch / "read.bin", "rb", buffering=0) as f:
        head = f.read(100_000)
        daemon.pfs("delete-file", "r", "master", "read.bin")
        wait_for(lambda: not (branch / "read.bin").exists(), 5, what="the deleted file to be gone")
        assert head + f.read() == data
    # Unlinked through the mount while being written: the writer carries on and closes cleanly,
    # the file is not committed, and a file written beside it is.
    with open(branch / "scratch.txt", "wb", buffering=0) as w:
        w.write(b"first part\n")
        os.unlink(branch / "scratch.txt")
        w.write(b"second part\n")
        (branch / "beside.txt").write_bytes(b"beside\n")
    head_id = view.wait_committed("r", "master", lambda c: view.exists("r", c, "beside.txt"), mount=m)
    assert not view.exists("r", head_id, "scratch.txt")
    assert not view.exists("r", head_id, "read.bin")
    assert view.read("r", head_id, "beside.txt") == b"beside\n"


def test_a_big_file_removed_before_its_commit(daemon, view, mounts, mnt):
    """A file too big to keep in memory (written to a temporary file), closed and removed before
    the mount sends it: its content stays until the commit has it, then goes."""
    data = os.urandom(9 * MiB)
    view.client.create_repo("r")
    view.put("r", "master", {"keep.txt": b"kept\n"})
    m = mounts("--idle", "1")
    branch = mnt / "r" / "master"
    (branch / "big.bin").write_bytes(data)
    (branch / "big.bin").unlink()
    (branch / "twin.bin").write_bytes(data)
    (branch / "after.txt").write_bytes(b"after\n")
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "after.txt"), mount=m)
    assert not view.exists("r", head, "big.bin")
    assert view.read("r", head, "twin.bin") == data
    assert m.process().poll() is None
    state = daemon.home / "mounts"
    assert not list(state.rglob(".pfs-write-*")), "a temporary file outlived its commit"


def test_a_repo_deleted_under_a_writer(daemon, view, mounts, mnt):
    """Its unsaved changes have nowhere to go: the mount drops them, says so once, and carries on
    (the writer too, until it closes); other repos' writes are saved; unmount reports the loss."""
    for repo in ("doomed", "other"):
        view.client.create_repo(repo)
        view.put(repo, "master", {"keep.txt": b"kept\n"})
    m = mounts("--idle", "0.3")
    with open(mnt / "doomed" / "master" / "w.txt", "wb", buffering=0) as w:
        w.write(b"first\n")
        (mnt / "doomed" / "master" / "closed.txt").write_bytes(b"closed\n")
        daemon.pfs("delete-repo", "doomed", "-f")
        (mnt / "other" / "master" / "saved.txt").write_bytes(b"saved\n")
        head = view.wait_committed("other", "master", lambda c: view.exists("other", c, "saved.txt"), mount=m)
        assert view.read("other", head, "saved.txt") == b"saved\n"
        w.write(b"second\n")  # the writer outlives the repo (and its changes' discarding)
    wait_for(lambda: not (mnt / "doomed").exists(), 5, what="the deleted repo to leave the mount")
    assert m.process().poll() is None
    r = m.unmount(check=False)  # it reports the loss
    assert r.returncode == 1 and b"doomed@master: the repo was deleted" in r.stderr, r.stderr
    log = "".join(p.read_text() for p in (daemon.home / "mounts").glob("*.log"))
    assert log.count("the repo is gone") == 1, log
    assert "Traceback" not in log, log


def test_a_branch_deleted_under_a_writer(daemon, view, mounts, mnt):
    """Its writes are saved in the commit the mount started, which no branch shows any more:
    `pfs unmount` says which commit holds them and exits non-zero."""
    view.client.create_repo("r")
    view.put("r", "master", {"keep.txt": b"kept\n"})
    view.client.create_branch("r", "feat", "master")
    m = mounts("--idle", "0.3")
    with open(mnt / "r" / "feat" / "w.txt", "wb", buffering=0) as w:
        w.write(b"first\n")
        daemon.pfs("delete-branch", "r", "feat")
        w.write(b"second\n")
    r = m.unmount(check=False)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    commit = err.split("the changes are in commit ")[1].split()[0]
    assert view.read("r", commit, "w.txt") == b"first\nsecond\n"
    assert "feat" not in [b.name for b in view.client.list_branch("r")]


def test_a_directory_renamed_while_a_file_in_it_is_written(daemon, view, mounts, mnt):
    data = os.urandom(10 * MiB)  # big enough to be written to a temporary file
    view.client.create_repo("r")
    view.put("r", "master", {"keep.txt": b"kept\n"})
    m = mounts("--idle", "0.3")
    branch = mnt / "r" / "master"
    (branch / "d").mkdir()
    (branch / "d" / "done.txt").write_bytes(b"done\n")
    with open(branch / "d" / "open.bin", "wb", buffering=0) as w:
        w.write(data[: 9 * MiB])
        os.rename(branch / "d", branch / "d2")
        w.write(data[9 * MiB :])
    assert sorted(os.listdir(branch)) == ["d2", "keep.txt"]
    assert (branch / "d2" / "open.bin").read_bytes() == data
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "d2/open.bin"), mount=m)
    assert view.files("r", head, "d2") == {"done.txt": b"done\n", "open.bin": data}
    assert not view.exists("r", head, "d")


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))


def test_appending_to_a_big_file_does_not_hold_it_in_memory(daemon, view, mounts, mnt, tmp_home):
    """Writing to a committed file copies it first (copy on write): a chunk at a time into a
    temporary file, not whole into memory (twice, as it was), which a big file would not fit."""
    src = tmp_home / "big.bin"
    with open(src, "wb") as f:
        for _ in range(384):
            f.write(os.urandom(MiB))
    view.client.create_repo("r")
    view.put_local("r", "master", "big.bin", src)
    m = mounts("--idle", "0.3")
    before = _peak_rss(m.pid)
    with open(mnt / "r" / "master" / "big.bin", "ab") as f:
        f.write(b"one more line\n")
    grew = _peak_rss(m.pid) - before
    head = view.wait_committed("r", "master", lambda c: view.info("r", c, "big.bin").size == 384 * MiB + 14, mount=m)
    # At most its chunk cache (256 MiB of mapped packs) and a few chunks; the copy was 1 GiB.
    assert grew < 352 * MiB, f"the mount's peak memory grew by {grew >> 20} MiB"
    # All of it, in order: the copy fetches chunks ahead, in parallel.
    got, want = hashlib.sha256(), hashlib.sha256(src.read_bytes() + b"one more line\n")
    for piece in view.client.get_file("r", head, "big.bin"):
        got.update(piece)
    assert got.hexdigest() == want.hexdigest()


def test_the_daemon_dying_under_a_mount(daemon, view, mounts, mnt):
    """Whatever needs the daemon fails at once with EIO (no hang); what the mount holds already
    (a finished commit's data it read, a file open for writing) carries on; once the daemon is
    back, so is everything, and what was written meanwhile reaches it."""
    data = os.urandom(2 * MiB)
    view.client.create_repo("r")
    commit = view.put("r", "master", {"a.bin": data, "b.txt": b"b\n"})
    m = mounts()
    frozen = mnt / "r" / commit / "a.bin"
    assert frozen.read_bytes() == data
    writer = open(mnt / "r" / "master" / "during.txt", "wb", buffering=0)
    writer.write(b"before\n")
    daemon.kill()

    def ls(*parts):  # a separate process: a hung call would fail this test at the timeout
        return subprocess.run(["ls", str(mnt.joinpath(*parts))], capture_output=True, timeout=20)

    try:
        # A branch asks the daemon for its head once its TTL is over.
        wait_for(lambda: ls("r", "master").returncode != 0, 5, what="the branch to need the daemon")
        r = ls("r", "master")
        assert b"Input/output error" in r.stderr, r.stderr
        assert frozen.read_bytes() == data  # in the kernel's cache: a finished commit never changes
        writer.write(b"during\n")
    finally:
        writer.close()  # its content waits in the mount
    assert m.process().poll() is None, "the mount process died with the daemon"

    daemon.start()
    wait_for(lambda: ls("r", "master").returncode == 0, 10, proc=m.process(), what="the mount to recover")
    assert (mnt / "r" / "master" / "b.txt").read_bytes() == b"b\n"
    (mnt / "r" / "master" / "new.txt").write_bytes(b"new\n")
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "new.txt"), mount=m)
    assert view.read("r", head, "during.txt") == b"before\nduring\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs under the mount's state")
def test_a_full_disk_under_the_mount_fails_the_write_not_the_mount(daemon, view, mounts, mnt):
    """Files being written live on the disk under $PFS_HOME/mounts until committed: when it is
    full the writer gets ENOSPC, and once it makes room everything works on."""
    state = daemon.home / "mounts"
    state.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state)], check=True, timeout=30)
    m = None
    try:
        view.client.create_repo("r")
        view.put("r", "master", {"keep.txt": b"kept\n"})
        m = mounts("--idle", "0.3")
        big = mnt / "r" / "master" / "big.bin"

        def fill():
            with open(big, "wb") as f:
                for _ in range(16):
                    f.write(os.urandom(MiB))

        assert _errno_of(fill) == errno.ENOSPC
        assert m.process().poll() is None
        big.unlink()
        (mnt / "r" / "master" / "small.txt").write_bytes(b"fits\n")
        head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "small.txt"), mount=m)
        assert view.read("r", head, "small.txt") == b"fits\n"
        assert not view.exists("r", head, "big.bin")
        m.unmount()  # while its state is still there
    finally:
        if m is not None:
            m.cleanup()
        subprocess.run(["umount", "-l", str(state)], check=True, timeout=30)


def test_a_laptop_mount_unmounts_while_pipeline_workers_run(daemon, view, mounts, mnt, tmp_home):
    """A root worker's private mount namespace holds no copy of the host's branch mounts, which
    would keep `pfs unmount` busy for as long as the worker runs."""
    view.client.create_repo("in")
    view.put("in", "master", {"a": b"a\n"})
    m = mounts()
    assert (mnt / "in" / "master" / "a").read_bytes() == b"a\n"
    began, go = tmp_home / "began", tmp_home / "go"
    spec = tmp_home / "slow.json"
    spec.write_text(
        json.dumps(
            {
                "pipeline": {"name": "slow"},
                "transform": {"cmd": ["sh"], "stdin": [f"touch {began}; while [ ! -e {go} ]; do sleep 0.05; done"]},
                "input": {"atom": {"repo": "in", "glob": "/"}},
            }
        )
    )
    daemon.pfs("create-pipeline", "-f", str(spec))
    try:
        wait_for(began.exists, 60, what="the worker to run the datum")
        workers = subprocess.run(["pgrep", "-f", "pfsfuse.scheduler.worker slow"], capture_output=True, text=True)
        for pid in workers.stdout.split():
            with open(f"/proc/{pid}/mountinfo") as f:
                held = [line.split()[4] for line in f]
            assert str(mnt) not in held and "/pfs" in held, held  # its own /pfs only
        m.unmount()  # asserts it succeeded and the directory is no longer mounted
        wait_for(lambda: not m.alive(), 5, what="the mount process to end")  # no copy holds it open
    finally:
        go.touch()
    daemon.pfs("flush-commit", "in@master")
