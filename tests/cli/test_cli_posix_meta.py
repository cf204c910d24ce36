"""put-file -r and get-file -r keep what a disk keeps beside the content (modes, owners, times,
symlinks, user extended attributes), as tar does; inspect-file shows it. The owners come back
only for root, as with tar."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

T = 1_300_000_000_987_654_321


def _tree(top: Path) -> Path:
    (top / "sub").mkdir(parents=True)
    (top / "run.sh").write_bytes(b"#!/bin/sh\n")
    (top / "sub" / "private").write_bytes(b"p\n")
    os.symlink("../run.sh", top / "sub" / "link")
    os.chmod(top / "run.sh", 0o4750)
    os.chmod(top / "sub" / "private", 0o600)
    os.chmod(top / "sub", 0o2770)
    for i, rel in enumerate(["run.sh", "sub/private", "sub/link", "sub"]):
        os.utime(top / rel, ns=(T + i, T + i), follow_symlinks=False)
    return top


def _seen(top: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(top))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, link)
    return out


def test_put_and_get_file_r_keep_modes_times_and_links(pfs, tmp_path):
    src = _tree(tmp_path / "src")
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    out = tmp_path / "out"
    pfs("get-file", "r", "master", "t", "-r", "-o", str(out))
    assert _seen(out) == _seen(src)
    info = json.loads(pfs("inspect-file", "r", "master", "t/run.sh", "--json").output)
    assert (info["mode"], info["mtime"], info["uid"]) == (0o4750, T, os.getuid())
    shown = pfs("inspect-file", "r", "master", "t/run.sh").output
    assert "-rwsr-x---" in shown and f"{os.getuid()}:{os.getgid()}" in shown
    assert json.loads(pfs("inspect-file", "r", "master", "t/sub/link", "--json").output)["target"] == "../run.sh"
    # a file put alone keeps its mode and time too
    pfs("put-file", "r", "master", "one", "-f", str(src / "sub" / "private"))
    one = json.loads(pfs("inspect-file", "r", "master", "one", "--json").output)
    assert (one["mode"], one["mtime"]) == (0o600, T + 1)


def test_put_file_r_into_the_root_of_a_repo(pfs, tmp_path):
    src = _tree(tmp_path / "src")
    pfs("create-repo", "r")
    for root in ("/", ""):  # the repo's root is always there: no directory to make
        pfs("put-file", "r", "master", root or "/", "-r", "-f", str(src))
    out = tmp_path / "out"
    pfs("get-file", "r", "master", "/", "-r", "-o", str(out))
    assert _seen(out) == _seen(src)


def test_put_and_get_file_keep_user_extended_attributes(pfs, tmp_path):
    src = _tree(tmp_path / "src")
    try:
        os.setxattr(src / "run.sh", "user.origin", b"https://example.org/run.sh")
    except OSError as e:
        pytest.skip(f"the test's scratch directory keeps no user attributes: {e}")
    os.setxattr(src / "sub", "user.team", b"a")
    os.setxattr(src / "sub" / "private", "trusted.not-kept", b"x")  # (root only; not a user one)
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    pfs("put-file", "r", "master", "one", "-f", str(src / "run.sh"))
    info = json.loads(pfs("inspect-file", "r", "master", "one", "--json").output)
    assert info["xattrs"] == {"user.origin": b"https://example.org/run.sh".hex()}  # (bytes: hex)
    assert "Attributes: user.origin (26B)" in pfs("inspect-file", "r", "master", "t/run.sh").output
    assert "xattrs" not in json.loads(pfs("inspect-file", "r", "master", "t/sub/private", "--json").output)
    out = tmp_path / "out"
    pfs("get-file", "r", "master", "t", "-r", "-o", str(out))
    assert os.listxattr(out / "run.sh") == ["user.origin"]
    assert os.getxattr(out / "run.sh", "user.origin") == b"https://example.org/run.sh"
    assert os.getxattr(out / "sub", "user.team") == b"a"
    assert os.listxattr(out / "sub" / "private") == []


def test_get_file_r_gives_the_attributes_the_target_can_hold(daemon, pfs, tmp_path):
    """An attribute bigger than the target's file system keeps for a file (ext4: about 4 KiB)
    is left out; the others, and the file, come back."""
    from pfsfuse.api.types import Put
    from pfsfuse.metadata.records import Stat
    from pfsfuse.sdk import Client

    big = bytes(60000)
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.small", b"x")
    except OSError as e:
        pytest.skip(f"the test's scratch directory keeps no user attributes: {e}")
    try:
        os.setxattr(probe, "user.big", big)
        holds_big = True
    except OSError:
        holds_big = False
    pfs("create-repo", "r")
    c = Client(f"unix:{daemon.home}/pfs.sock")
    try:
        st = Stat(0o640, os.getuid(), os.getgid(), T, T, xattrs=(("user.a", b"small"), ("user.big", big)))
        c.write(("r", "master"), [Put("d/f", stream=io.BytesIO(b"content"), stat=st)])
    finally:
        c.close()
    out = tmp_path / "out"
    pfs("get-file", "r", "master", "d", "-r", "-o", str(out))
    assert (out / "f").read_bytes() == b"content"
    assert stat.S_IMODE(os.stat(out / "f").st_mode) == 0o640
    assert os.getxattr(out / "f", "user.a") == b"small"
    assert ("user.big" in os.listxattr(out / "f")) == holds_big
