"""Paths that would pass the store's limit fail at the system call that makes them, with
ENAMETOOLONG, as on a disk; nothing made afterwards is lost, and `pfs unmount` exits 0 only when
every change was saved.

Each system call here names one short component (through directory descriptors), so only the
mount can see that the path it makes in the branch is too long."""

from __future__ import annotations

import errno
import os
from contextlib import ExitStack

import pytest

from helpers import fuse_unavailable, is_mounted

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]

NAME = "n" * 250
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY


def _errno_of(fn) -> int | None:
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def _descend(stack: ExitStack, top: int, levels: int, make: bool = True) -> int:
    """A descriptor of NAME/NAME/... `levels` deep under `top`, made on the way if `make`."""
    fd = top
    for _ in range(levels):
        if make:
            os.mkdir(NAME, dir_fd=fd)
        fd = os.open(NAME, DIRECTORY, dir_fd=fd)
        stack.callback(os.close, fd)
    return fd


def _deep_path(levels: int, *rest: str) -> str:
    return "/".join([NAME] * levels + list(rest))


def test_a_path_past_4096_bytes_fails_where_it_is_made(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"keep.txt": b"kept\n"})
    m = mounts("--idle", "0.3")
    branch = mnt / "r" / "master"
    with ExitStack() as stack:
        top = os.open(branch, DIRECTORY)
        stack.callback(os.close, top)
        deep = _descend(stack, top, 16)  # its path in the branch: 4015 bytes
        long, fits = "x" * 100, "y" * 80  # 4116 and 4096 bytes below it
        assert _errno_of(lambda: os.mkdir(long, dir_fd=deep)) == errno.ENAMETOOLONG
        assert _errno_of(lambda: os.open(long, os.O_CREAT | os.O_WRONLY, dir_fd=deep)) == errno.ENAMETOOLONG
        assert _errno_of(lambda: os.symlink("keep.txt", long, dir_fd=deep)) == errno.ENAMETOOLONG
        assert _errno_of(lambda: os.link("keep.txt", long, src_dir_fd=top, dst_dir_fd=deep)) == errno.ENAMETOOLONG
        assert _errno_of(lambda: os.rename("keep.txt", long, src_dir_fd=top, dst_dir_fd=deep)) == errno.ENAMETOOLONG
        # A target the store cannot keep as text fails as a name does.
        assert _errno_of(lambda: os.symlink(b"\xff\xfe", b"bad", dir_fd=top)) == errno.EINVAL
        # A name that just fits works, and so does everything after the refusals.
        fd = os.open(fits, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=deep)
        os.write(fd, b"at the limit\n")
        os.fsync(fd)
        os.close(fd)
    (branch / "after.txt").write_bytes(b"after\n")
    with open(branch / "after.txt", "rb+") as f:
        os.fsync(f.fileno())
    os.rename(branch / "after.txt", branch / "renamed.txt")
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "renamed.txt"), mount=m)
    assert view.read("r", head, _deep_path(16, fits)) == b"at the limit\n"
    assert view.read("r", head, "renamed.txt") == b"after\n"
    assert view.read("r", head, "keep.txt") == b"kept\n"
    r = m.unmount()
    assert r.stderr == b""
    assert daemon.pfs("fsck").stdout == b"ok: no problems found\n"


def test_a_rename_that_would_make_a_path_too_long_fails(daemon, view, mounts, mnt):
    """Renaming a directory to a longer name, or into a deeper one, lengthens every path below
    it: the rename fails if one would pass 4096 bytes, whether the files are committed, sent or
    still being written, and a finished commit never gets such a path."""
    view.client.create_repo("r")
    view.put("r", "master", {"c/" + _deep_path(16, "f"): b"deep\n"})  # 4017 bytes below c ...
    view.client.create_branch("r", "other", "master")
    view.ops("r", "master", [])
    m = mounts("--idle", "0.3")
    branch = mnt / "r" / "master"
    os.rename(branch / "c", branch / "d")  # as long: fine
    assert _errno_of(lambda: os.rename(branch / "d", branch / ("e" * 100))) == errno.ENAMETOOLONG
    (branch / "sub").mkdir()
    assert _errno_of(lambda: os.rename(branch / "d", branch / "sub" / ("e" * 80))) == errno.ENAMETOOLONG
    # ... made through the mount a moment ago, with a file in it still open for writing:
    with ExitStack() as stack:
        top = os.open(branch, DIRECTORY)
        stack.callback(os.close, top)
        os.mkdir("w", dir_fd=top)
        w = os.open("w", DIRECTORY, dir_fd=top)
        stack.callback(os.close, w)
        deep = _descend(stack, w, 16)
        fd = os.open("open.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=deep)
        stack.callback(os.close, fd)
        os.write(fd, b"being written\n")
        assert _errno_of(lambda: os.rename("w", "e" * 100, src_dir_fd=top, dst_dir_fd=top)) == errno.ENAMETOOLONG
        os.rename("w", "e" * 30, src_dir_fd=top, dst_dir_fd=top)  # still fits
    # A symlink to it from another branch stays a symlink where a reference would be too long.
    other = mnt / "r" / "other"
    os.symlink(branch / "d", other / ("s" * 200))
    assert os.path.islink(other / ("s" * 200))
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "e" * 30), mount=m)
    assert view.read("r", head, "d/" + _deep_path(16, "f")) == b"deep\n"
    assert view.read("r", head, "e" * 30 + "/" + _deep_path(16, "open.txt")) == b"being written\n"
    other_head = view.wait_committed("r", "other", lambda c: view.exists("r", c, "s" * 200), mount=m)
    assert view.info("r", other_head, "s" * 200).type == "symlink"
    m.unmount()
    assert daemon.pfs("fsck").stdout == b"ok: no problems found\n"


def test_unmount_reports_changes_that_were_not_saved(daemon, view, mounts, mnt):
    """The repo is deleted under a file being written: its content cannot be saved, and `pfs
    unmount` says so and exits non-zero (it used to exit 0, and only the log knew)."""
    view.client.create_repo("doomed")
    view.put("doomed", "master", {"keep.txt": b"kept\n"})
    m = mounts("--idle", "0.3")
    with open(mnt / "doomed" / "master" / "w.txt", "wb", buffering=0) as w:
        w.write(b"first\n")
        daemon.pfs("delete-repo", "doomed", "-f")
        w.write(b"second\n")
    r = m.unmount(check=False)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "not saved: doomed@master: the repo was deleted" in err
    assert err.strip().splitlines()[-1].endswith("changes made through the mount were not saved (listed above)")
    assert "Traceback" not in err
    assert not is_mounted(mnt)
