"""User extended attributes are kept as a disk keeps them: set, read, listed and removed in a
branch, stored in the entry's stat beside its mode (a remount and the commit show them; the
content hash does not move), and carried by `rsync -aX`, `tar --xattrs`, `cp -a`, `put-file -r`
and `get-file -r`. The mount's own `user.pfs.*` are read by name and never listed, so that a copy
made out of a mount is the copy a disk would give."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from mountkit import sh

from helpers import fuse_unavailable

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))]

BINARY = bytes(range(256))


def _attrs(p: Path) -> dict[str, bytes]:
    return {n: os.getxattr(p, n) for n in os.listxattr(p)}


def _errno(call, *args, **kw) -> int:
    with pytest.raises(OSError) as e:
        call(*args, **kw)
    return e.value.errno


def test_user_attributes_are_kept_in_the_commit(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"old.txt": b"stored before\n"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    (b / "new.txt").write_bytes(b"new\n")
    (b / "d").mkdir()
    before = view.info("r", "master", "old.txt").hash
    os.setxattr(b / "old.txt", "user.origin", b"s3://bucket/old.txt")
    os.setxattr(b / "new.txt", "user.empty", b"")
    os.setxattr(b / "new.txt", "user.bin", BINARY)
    os.setxattr(b / "d", "user.owner", b"team-a")
    assert _errno(os.setxattr, b / "old.txt", "user.origin", b"x", os.XATTR_CREATE) == errno.EEXIST
    assert _errno(os.setxattr, b / "old.txt", "user.nope", b"x", os.XATTR_REPLACE) == errno.ENODATA
    os.setxattr(b / "new.txt", "user.gone", b"x")
    os.removexattr(b / "new.txt", "user.gone")
    assert _errno(os.removexattr, b / "new.txt", "user.gone") == errno.ENODATA
    assert _errno(os.getxattr, b / "new.txt", "user.gone") == errno.ENODATA
    expected = {
        "old.txt": {"user.origin": b"s3://bucket/old.txt"},
        "new.txt": {"user.bin": BINARY, "user.empty": b""},
        "d": {"user.owner": b"team-a"},
    }

    def check(top: Path) -> None:
        for rel, attrs in expected.items():
            assert _attrs(top / rel) == attrs, rel

    check(b)
    head = view.wait_committed(
        "r", "master", lambda c: view.exists("r", c, "d") and view.info("r", c, "d").xattrs is not None, m
    )
    for rel, attrs in expected.items():
        assert view.info("r", head, rel).xattrs == attrs, rel
    assert view.info("r", head, "old.txt").hash == before  # not a content change
    check(b)
    m.__exit__(None, None, None)
    mounts()
    check(b)  # a new mount of the store
    check(mnt / "r" / head)  # and the commit itself
    assert _errno(os.setxattr, mnt / "r" / head / "old.txt", "user.x", b"1") == errno.EROFS


def test_attributes_follow_their_file_and_are_checked_as_a_disk_checks_them(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"f": b"one\n"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    f = b / "f"
    ctime = os.stat(f).st_ctime_ns
    os.setxattr(f, "user.tag", b"v1")
    assert os.stat(f).st_ctime_ns > ctime  # a change of the entry's metadata, as on a disk
    with open(f, "ab") as out:  # written, chmodded, renamed and linked: still its attributes
        out.write(b"two\n")
    os.chmod(f, 0o600)
    os.rename(f, b / "g")
    os.link(b / "g", b / "h")
    os.setxattr(b / "h", "user.second", b"v2")  # one file, two names
    both = {"user.tag": b"v1", "user.second": b"v2"}
    assert _attrs(b / "g") == both and _attrs(b / "h") == both
    os.symlink("g", b / "link")
    assert _errno(os.setxattr, b / "link", "user.x", b"1", 0, follow_symlinks=False) == errno.EPERM
    assert _errno(os.setxattr, b / "g", "user.", b"1") == errno.EINVAL
    for name in ("trusted.x", "security.x"):
        assert _errno(os.setxattr, b / "g", name, b"1") in (errno.ENOTSUP, errno.EOPNOTSUPP), name
    os.setxattr(b / "g", "user.big", bytes(60000))
    assert _errno(os.setxattr, b / "g", "user.more", bytes(10000)) == errno.ENOSPC
    assert _errno(os.setxattr, b / "g", "user.huge", bytes(65537)) == errno.E2BIG
    os.removexattr(b / "g", "user.big")
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "h"), m)
    assert view.info("r", head, "h").xattrs == both
    assert view.read("r", head, "g") == b"one\ntwo\n"


def _tagged_source(top: Path) -> Path:
    """A tree whose files and directories carry user attributes; skips where /tmp keeps none."""
    (top / "sub").mkdir(parents=True)
    (top / "a.csv").write_bytes(b"x,y\n1,2\n")
    (top / "sub" / "b.bin").write_bytes(BINARY)
    (top / "plain").write_bytes(b"no attributes\n")
    try:
        os.setxattr(top / "a.csv", "user.origin", b"https://example.org/a.csv")
    except OSError as e:
        pytest.skip(f"the test's scratch directory keeps no user attributes: {e}")
    os.setxattr(top / "a.csv", "user.checksum.sha1", b"0123")
    os.setxattr(top / "sub" / "b.bin", "user.bin", BINARY)
    os.setxattr(top / "sub", "user.dir", b"yes")
    return top


def _tree_attrs(top: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(top))] = _attrs(p)
    return out


@pytest.mark.parametrize("tool", ["rsync", "tar", "cp"])
def test_tools_carry_attributes_in_and_out_exactly(tool, daemon, view, mounts, mnt, tmp_home):
    src = _tagged_source(tmp_home / "src")
    expected = _tree_attrs(src)
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    mounts("--idle", "1")
    dst = mnt / "r" / "master" / "copy"
    back = tmp_home / "back"

    def copy(frm: Path, to: Path) -> None:
        if tool == "rsync":
            sh("rsync", "-aX", f"{frm}/", f"{to}/")  # (sh fails on rsync's code 23)
        elif tool == "cp":
            sh("cp", "-a", str(frm), str(to))
        else:
            to.mkdir()
            subprocess.run(f"tar --xattrs -C {frm} -cf - . | tar --xattrs -C {to} -xf -", shell=True, check=True)

    copy(src, dst)
    assert _tree_attrs(dst) == expected
    copy(dst, back)
    assert _tree_attrs(back) == expected  # and no user.pfs.* on the copy out
    got = tmp_home / "got"  # and out of the store without the mount
    daemon.pfs("get-file", "r", "master", "copy", "-r", "-o", str(got))
    assert _tree_attrs(got) == expected


def test_put_file_r_keeps_attributes_and_the_mounts_own_are_read_by_name(daemon, view, mounts, mnt, tmp_home):
    src = _tagged_source(tmp_home / "src")
    os.setxattr(src / "plain", "user.pfs.hash", b"copied out of a mount")  # not kept: the mount's own
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "r", "master", "in", "-r", "-f", str(src))
    assert view.info("r", "master", "in/a.csv").xattrs == _attrs(src / "a.csv")
    assert view.info("r", "master", "in/plain").xattrs is None
    mounts()
    f = mnt / "r" / "master" / "in" / "plain"
    assert os.listxattr(f) == []
    assert os.getxattr(f, "user.pfs.hash").decode() == view.info("r", "master", "in/plain").hash
    os.setxattr(f, "user.pfs.path", b"ignored")  # accepted, and changes nothing
    os.removexattr(f, "user.pfs.repo")
    assert os.getxattr(f, "user.pfs.path").decode().lstrip("/") == "in/plain"
    assert os.listxattr(f) == []
