"""A directory listed plainly (find, ls -f) is cached by the kernel and served from there the next
time, as long as it is unchanged: new commits to its branch, pending writes and the mount's own
changes show at once. A reader that stats what it lists (ls -l) gets the listing from the mount
again, with attributes. The mount counts the readdir requests it answers (user.pfs.readdirs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mountkit import flat_dir

from helpers import fuse_unavailable, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))]

N = 3_000  # dozens of readdir requests


def _find(top: Path) -> list[str]:
    out = subprocess.run(["find", ".", "-printf", "%y %p\n"], cwd=top, capture_output=True, text=True, check=True)
    return sorted(out.stdout.splitlines())


@pytest.fixture
def stored(daemon, mounts, tmp_home):
    """The tree on the disk, the mount, and the tree through it, in the branch master."""
    src = flat_dir(tmp_home / "src" / "d", N, 500)
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "-r", "r@master:/d", "-f", str(src))
    m = mounts()
    return src, m, m.path / "r" / "master" / "d"


def _readdirs(m) -> int:
    return int(os.getxattr(m.path, "user.pfs.readdirs"))


def test_a_plain_listing_is_served_again_by_the_kernel(daemon, stored):
    src, m, d = stored
    client = daemon.client()
    try:
        commit_id = client.inspect_commit("r", "master").id
    finally:
        client.close()
    for top in (d, m.path / "r" / commit_id / "d"):
        before = _readdirs(m)
        assert _find(top) == _find(src)
        first = _readdirs(m)
        assert first - before > 10  # read through the mount, plainly after the first request
        assert _find(top) == _find(src)
        assert sorted(os.listdir(top)) == sorted(os.listdir(src))
        assert _readdirs(m) == first  # both served by the kernel's copy

    # ls -l stats what it lists: after a few lookups the mount takes over, with attributes.
    long = subprocess.run(["ls", "-l", "--time-style=+", str(d)], capture_output=True, text=True, check=True)
    lines = long.stdout.splitlines()[1:]
    assert len(lines) == len(os.listdir(src))
    sizes = {cols[-1]: (cols[0][0], cols[4]) for cols in map(str.split, lines) if "->" not in cols}
    assert sizes["file-02999"] == ("-", str(2999 % 13)) and sizes["sub-01500"][0] == "d"
    after_ls = _readdirs(m)
    assert after_ls > first
    # It did not list plainly: the next listing comes from the mount again.
    assert _find(d) == _find(src)
    assert _readdirs(m) > after_ls


def test_a_cached_listing_follows_its_branch(daemon, mounts, stored, tmp_home):
    src, m, d = stored
    names = set(os.listdir(src))
    _find(d)
    _find(d)  # the kernel's copy, now
    new = tmp_home / "new"
    new.write_bytes(b"new")
    daemon.pfs("put-file", "r@master:/d/zz-remote", "-f", str(new))
    daemon.pfs("delete-file", "r@master:/d/file-00001")
    names = (names | {"zz-remote"}) - {"file-00001"}
    wait_for(lambda: set(os.listdir(d)) == names, timeout=10, what="the new commit in the listing")
    _find(d)
    _find(d)

    # Changes through the mount show at once, pending and once sent.
    (d / "zz-local").write_bytes(b"local")
    (d / "file-00002").unlink()
    names = (names | {"zz-local"}) - {"file-00002"}
    assert set(os.listdir(d)) == names
    m.unmount()
    mounts()
    assert set(os.listdir(d)) == names


def test_readers_of_two_versions_at_once_leave_nothing_cached(daemon, stored, tmp_home):
    src, m, d = stored
    _find(d)
    _find(d)
    new = tmp_home / "new"
    new.write_bytes(b"new")
    names = set(os.listdir(src)) | {"zz-remote"}
    with os.scandir(d) as old:
        next(old)  # a reader of the version before
        daemon.pfs("put-file", "r@master:/d/zz-remote", "-f", str(new))
        wait_for(lambda: set(os.listdir(d)) == names, timeout=10, what="the new commit in the listing")
        for _ in old:  # whatever mix it reads, as a disk's reader of a changing directory may
            pass
    # Both filled the kernel's copy: neither may leave it to the next reader.
    before = _readdirs(m)
    assert set(os.listdir(d)) == names
    assert _readdirs(m) > before
