"""Copy elision: `ln -s` into the mount's data, `ln` and `mv` store references to existing chunks,
and `cp` of stored data dedups, so the daemon's chunk directory does not grow; symlinks that point
elsewhere stay symlinks."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountkit import ELISION_SLACK, MiB, chunk_bytes, sh

from helpers import fuse_unavailable

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]

SIZE = 64 * MiB


@pytest.fixture(scope="module")
def big_file() -> Iterator[Path]:
    """64 MiB of random bytes (made once for the module): dozens of chunks, none compressible."""
    d = Path(tempfile.mkdtemp(prefix="pfs-big-", dir="/tmp"))
    path = d / "big.bin"
    try:
        with open(path, "wb") as f:
            for _ in range(SIZE // MiB):
                f.write(os.urandom(MiB))
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def stored(view, big_file) -> dict:
    """r/master: big.bin (64 MiB) and a small directory d/; a finished commit."""
    view.client.create_repo("r")
    view.put("r", "master", {"d/x.txt": b"x\n", "d/y/z.txt": b"z\n"})
    cid = view.put_local("r", "master", "big.bin", big_file)
    info = view.info("r", cid, "big.bin")
    assert info.size == SIZE
    return {"commit": cid, "hash": info.hash, "dir_hash": view.info("r", cid, "d").hash}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(MiB):
            h.update(piece)
    return h.hexdigest()


def _grew(daemon, before: int) -> int:
    grew = chunk_bytes(daemon) - before
    assert grew <= ELISION_SLACK, f"the chunk store grew by {grew} bytes: data was copied, not referenced"
    return grew


def test_ln_s_into_the_mount_stores_references(daemon, view, stored, big_file, mounts, mnt):
    # A link into another ref stores a reference to the data; one into its own branch is what
    # the user means by a symlink (it follows later changes) and stays one.
    cid = stored["commit"]
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    before = chunk_bytes(daemon)
    os.mkdir(b / "links")
    links = {
        "links/commit.bin": str(mnt / "r" / cid / "big.bin"),  # absolute, into a commit id
        "links/relcommit.bin": f"../../{cid}/big.bin",  # relative, into a commit id
    }
    own = {"links/abs.bin": str(b / "big.bin"), "links/rel.bin": "../big.bin"}  # into the branch
    for link, target in {**links, **own}.items():
        sh("ln", "-s", target, str(b / link))
    sh("ln", "-s", f"../../{cid}/d", str(b / "links" / "dir"))  # a directory
    assert (b / "links" / "rel.bin").stat().st_size == SIZE
    assert os.readlink(b / "links" / "rel.bin") == "../big.bin"
    assert _sha(b / "links" / "abs.bin") == _sha(big_file)
    assert (b / "links" / "dir" / "y" / "z.txt").read_bytes() == b"z\n"
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "links/dir"), m)
    _grew(daemon, before)
    for link in links:
        info = view.info("r", head, link)
        assert (info.type, info.size, info.hash) == ("file", SIZE, stored["hash"]), link
    for link, target in own.items():
        assert view.info("r", head, link).target == target
        assert os.path.islink(b / link) and os.readlink(b / link) == target
    d = view.info("r", head, "links/dir")
    assert (d.type, d.hash) == ("dir", stored["dir_hash"])
    assert view.read("r", head, "links/dir/y/z.txt") == b"z\n"
    # Through the mount, from the finished commit.
    assert os.stat(mnt / "r" / head / "links" / "relcommit.bin").st_size == SIZE
    assert (mnt / "r" / head / "links" / "dir" / "x.txt").read_bytes() == b"x\n"


def test_hard_link_stores_a_reference(daemon, view, stored, big_file, mounts, mnt):
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    before = chunk_bytes(daemon)
    sh("ln", str(b / "big.bin"), str(b / "hard.bin"))
    assert os.stat(b / "hard.bin").st_size == SIZE
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "hard.bin"), m)
    _grew(daemon, before)
    for name in ("big.bin", "hard.bin"):
        info = view.info("r", head, name)
        assert (info.type, info.hash) == ("file", stored["hash"]), name


def test_hard_link_from_a_commit_into_the_branch(daemon, view, stored, mounts, mnt):
    # Assumption: `ln MNT/r/<commit>/f MNT/r/<branch>/g` is allowed (only the new name is a write,
    # and it is under a branch) and is elided like any other hard link.
    m = mounts("--idle", "1")
    before = chunk_bytes(daemon)
    sh("ln", str(mnt / "r" / stored["commit"] / "big.bin"), str(mnt / "r" / "master" / "from-commit.bin"))
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "from-commit.bin"), m)
    _grew(daemon, before)
    assert view.info("r", head, "from-commit.bin").hash == stored["hash"]


def test_mv_stores_a_reference(daemon, view, stored, big_file, mounts, mnt):
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    before = chunk_bytes(daemon)
    os.mkdir(b / "moved")
    sh("mv", str(b / "big.bin"), str(b / "moved" / "big.bin"))
    sh("mv", str(b / "d"), str(b / "moved" / "d"))
    assert not (b / "big.bin").exists()
    assert _sha(b / "moved" / "big.bin") == _sha(big_file)
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "moved/d/y/z.txt"), m)
    _grew(daemon, before)
    assert not view.exists("r", head, "big.bin") and not view.exists("r", head, "d")
    assert view.info("r", head, "moved/big.bin").hash == stored["hash"]
    assert view.info("r", head, "moved/d").hash == stored["dir_hash"]


def test_cp_of_stored_data_stores_no_new_chunks(daemon, view, stored, big_file, mounts, mnt):
    # Bytes flow through the mount here, but they are already in the store: dedup.
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    before = chunk_bytes(daemon)
    sh("cp", str(b / "big.bin"), str(b / "copy.bin"))
    sh("cp", str(mnt / "r" / stored["commit"] / "big.bin"), str(b / "copy2.bin"))
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "copy2.bin"), m)
    _grew(daemon, before)
    assert view.info("r", head, "copy.bin").hash == stored["hash"]
    assert view.info("r", head, "copy2.bin").hash == stored["hash"]


def test_symlinks_pointing_elsewhere_stay_symlinks(daemon, view, mounts, mnt, tmp_home):
    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"A"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    outside = tmp_home / "outside.txt"
    outside.write_bytes(b"not in the store\n")
    sh("ln", "-s", "/etc/hostname", str(b / "abs-out"))
    sh("ln", "-s", "../../../outside.txt", str(b / "rel-out"))  # master -> r -> mnt -> tmp_home
    sh("ln", "-s", "/nonexistent/target", str(b / "dangling"))
    assert (b / "rel-out").read_bytes() == b"not in the store\n"
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "dangling"), m)
    for name, target in {
        "abs-out": "/etc/hostname",
        "rel-out": "../../../outside.txt",
        "dangling": "/nonexistent/target",
    }.items():
        info = view.info("r", head, name)
        assert (info.type, info.target) == ("symlink", target), name
        assert os.readlink(mnt / "r" / head / name) == target


def test_mv_and_ln_across_branches_from_an_open_commit(daemon, view, stored, big_file, mounts, mnt):
    """The source is a branch's open commit, which goes on changing: the reference reaches the
    other branch before the source changes, so nothing is lost and nothing is copied."""
    view.client.create_branch("r", "other", "master")
    m = mounts("--idle", "1")
    master, other = mnt / "r" / "master", mnt / "r" / "other"
    (master / "touch.txt").write_bytes(b"opens master's commit\n")
    os.link(master / "big.bin", master / "twin.bin")  # in master's open commit now
    before = chunk_bytes(daemon)
    sh("mv", str(master / "twin.bin"), str(other / "moved.bin"))
    os.link(master / "d" / "x.txt", other / "x-link.txt")
    os.unlink(master / "d" / "x.txt")
    assert not (master / "twin.bin").exists()
    head = view.wait_committed("r", "other", lambda c: view.exists("r", c, "x-link.txt"), m)
    _grew(daemon, before)
    assert view.info("r", head, "moved.bin").hash == stored["hash"]
    assert view.read("r", head, "x-link.txt") == b"x\n"
    mhead = view.wait_committed("r", "master", lambda c: not view.exists("r", c, "d/x.txt"), m)
    assert not view.exists("r", mhead, "twin.bin")
