"""Listing a directory of a commit fetches its small files' chunks ahead, a window at a time (one
request for their locations), so that a copy of the directory reads them from the cache; a
listing alone fetches one window, big files are left to the sequential read-ahead, and what is
read is the files' own content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mountkit import sh

from helpers import fuse_unavailable, wait_for

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]

SMALL = 700  # files: more than two windows of the mount's (256)
WINDOW = 256
BIG = 2 << 20  # over the mount's size for a file fetched when listed


def _fetched(mnt: Path) -> int:
    return int(os.getxattr(mnt, "user.pfs.fetched"))


def test_listing_fetches_small_files_ahead_and_cp_r_reads_them(daemon, mounts, mnt, tmp_home):
    src = tmp_home / "src"
    (src / "d").mkdir(parents=True)
    sizes = []
    for i in range(SMALL):
        data = os.urandom(100 + i)
        (src / "d" / f"f{i:04d}").write_bytes(data)
        sizes.append(len(data))
    (src / "d" / "zbig").write_bytes(os.urandom(BIG))
    (src / "d" / "zempty").write_bytes(b"")
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    mounts()
    before = _fetched(mnt)
    names = sorted(os.listdir(mnt / "r" / "master" / "t" / "d"))
    assert names == [f"f{i:04d}" for i in range(SMALL)] + ["zbig", "zempty"]
    window = sum(sizes[:WINDOW])
    wait_for(lambda: _fetched(mnt) - before >= window, what="the first window fetched after the listing")
    assert _fetched(mnt) - before == window, "a listing alone fetches one window, not the big file"
    out = tmp_home / "out"
    sh("cp", "-r", str(mnt / "r" / "master" / "t"), str(out))
    sh("diff", "-r", str(src), str(out))
    assert _fetched(mnt) - before >= sum(sizes) + BIG
