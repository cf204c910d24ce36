"""A reader that lists without stat-ing (find, ls -f, os.scandir) gets plain READDIR replies after
the first batch (the kernel's adaptive READDIRPLUS): the same names and types as the disk shows,
the same inode numbers as a stat gives, and no inode kept in the kernel or the mount per name. A
reader that stats (ls -l) still gets attributes with its names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mountkit import flat_dir

from helpers import Mount, fuse_unavailable

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))]

N = 20_000  # several READDIRPLUS batches of 1 MiB


def _tree(top: Path) -> Path:
    d = flat_dir(top / "d", N, 1000)
    os.mkfifo(d / "fifo")
    return d


def _find(top: Path) -> list[str]:
    out = subprocess.run(["find", ".", "-printf", "%y %p\n"], cwd=top, capture_output=True, text=True, check=True)
    return sorted(out.stdout.splitlines())


@pytest.fixture
def stored(daemon, mounts, tmp_home) -> tuple[Path, Mount, Path]:
    """The tree on the disk, a mount, and the tree through it, in the branch master."""
    src = _tree(tmp_home / "src")
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "-r", "r@master:/d", "-f", str(src))
    m = mounts()
    return src, m, m.path / "r" / "master" / "d"


def test_find_lists_a_big_directory_without_keeping_its_names(stored):
    src, m, d = stored
    before = int(os.getxattr(m.path, "user.pfs.inodes"))

    assert _find(d) == _find(src)
    with os.scandir(d) as entries:  # types from the listing alone (d_type)
        kinds = {e.name: (e.is_dir(follow_symlinks=False), e.is_symlink()) for e in entries}
    assert kinds == {e.name: (e.is_dir(), e.is_symlink()) for e in os.scandir(src)}
    # Only the first batch came with attributes: the kernel holds (and the mount keeps) far
    # fewer inodes than names listed.
    assert int(os.getxattr(m.path, "user.pfs.inodes")) - before < N // 2

    # A listing's numbers are the numbers stat gives.
    out = subprocess.run(["ls", "-f", "-i", str(d)], capture_output=True, text=True, check=True).stdout.split()
    listed = dict(zip(out[1::2], map(int, out[0::2]), strict=True))
    for name in ("file-00000", "file-19999", "sub-05000", "link-07000", "fifo"):
        assert listed[name] == os.lstat(d / name).st_ino

    # ls -l stats what it lists: it sees sizes and kinds as on the disk.
    long = subprocess.run(["ls", "-l", "--time-style=+", str(d)], capture_output=True, text=True, check=True)
    sizes = {
        cols[-1]: (cols[0][0], cols[4]) for cols in map(str.split, long.stdout.splitlines()[1:]) if "->" not in cols
    }
    assert sizes["file-12345"] == ("-", str(12345 % 13))
    assert sizes["sub-03000"][0] == "d" and sizes["fifo"][0] == "p"
    assert len(long.stdout.splitlines()) - 1 == N + 2 * (N // 1000) + 1


def test_a_branch_listed_plainly_shows_new_names(daemon, stored):
    _, m, d = stored
    assert len(os.listdir(d)) == N + 2 * (N // 1000) + 1
    (d / "zz-new").write_bytes(b"new")  # pending in the mount: the listing is merged
    (d / "file-00001").unlink()
    names = set(os.listdir(d))
    assert "zz-new" in names and "file-00001" not in names
    m.unmount()
    assert daemon.pfs("get-file", "r@master:/d/zz-new").stdout == b"new"
    assert daemon.pfs("list-file", "r@master:/d/file-00001", check=False).returncode != 0


def test_a_renamed_name_is_listed_plainly_with_the_number_it_kept(stored):
    _, _, d = stored
    kept = os.lstat(d / "file-00042").st_ino  # the kernel holds it: a rename keeps its number
    os.rename(d / "file-00042", d / "zz-moved")
    os.rename(d / "file-00043", d / "zz-unheld")  # one the kernel held no inode for
    with os.scandir(d) as entries:  # numbers from the listing alone (d_ino), no stat
        listed = {e.name: e.inode() for e in entries}
    assert listed["zz-moved"] == os.lstat(d / "zz-moved").st_ino == kept
    assert listed["zz-unheld"] == os.lstat(d / "zz-unheld").st_ino
    assert "file-00042" not in listed and "file-00043" not in listed
