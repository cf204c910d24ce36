"""Hard links through the mount are links: two names of one file share an inode number, a link
count and their writes, in the commit too (stored as one file's names, no bytes copied), and
tar, cp -a and rsync -aH carry them in and out; get-file -r and put-file -r as well."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mountkit import sh

from helpers import fuse_unavailable

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


def _ino_nlink(*paths: Path) -> list[str]:
    """What `stat -c %i,%h` prints of each path."""
    return sh("stat", "-c", "%i,%h", *map(str, paths), text=True).stdout.split()


def _groups(top: Path) -> list[set[str]]:
    """The files under `top` that are names of one file (by inode), groups of two or more."""
    by_ino: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            p = Path(dirpath) / name
            by_ino.setdefault(os.lstat(p).st_ino, set()).add(str(p.relative_to(top)))
    return sorted((g for g in by_ino.values() if len(g) > 1), key=sorted)


def test_ln_makes_another_name_of_the_file(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"a": b"first\n"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    sh("ln", str(b / "a"), str(b / "b"))
    [a_, b_] = _ino_nlink(b / "a", b / "b")
    assert a_ == b_ and a_.endswith(",2")
    with open(b / "b", "a") as f:  # written through one name, read through the other
        f.write("second\n")
    assert (b / "a").read_bytes() == b"first\nsecond\n"
    head = view.wait_committed("r", "master", lambda c: view.read("r", c, "a") == b"first\nsecond\n", m)
    a, bb = view.info("r", head, "a"), view.info("r", head, "b")
    assert a.link is not None and a.link == bb.link and a.nlink == bb.nlink == 2 and a.hash == bb.hash
    m.__exit__(None, None, None)
    m = mounts("--idle", "1")
    [a_, b_] = _ino_nlink(b / "a", b / "b")  # a new mount shows one file again
    assert a_ == b_ and a_.endswith(",2")
    with open(b / "b", "r+b") as f:  # seen through the other name while still open
        f.write(b"FIRST")
        f.flush()
        assert (b / "a").read_bytes() == b"FIRST\nsecond\n"
    (b / "a").write_bytes(b"rewritten\n")
    assert (b / "b").read_bytes() == b"rewritten\n"
    (b / "a").unlink()  # the other name stays, counted alone
    assert _ino_nlink(b / "b")[0].endswith(",1")
    assert (b / "b").read_bytes() == b"rewritten\n"
    head = view.wait_committed("r", "master", lambda c: not view.exists("r", c, "a"), m)
    assert view.read("r", head, "b") == b"rewritten\n" and view.info("r", head, "b").nlink == 1


def test_a_name_replaced_or_unlinked_while_open_counts_as_on_a_disk(daemon, view, mounts, mnt):
    """rename over one name of a link leaves the other counted alone; an open file whose last
    name is gone has no link left (fstat says 0); a fifo is linked like a file."""
    view.client.create_repo("r")
    view.put("r", "master", {"dst": b"old\n", "src": b"new\n", "open": b"x"})
    mounts("--idle", "1")
    b = mnt / "r" / "master"
    os.link(b / "dst", b / "dstlnk")
    os.rename(b / "src", b / "dst")
    assert _ino_nlink(b / "dstlnk")[0].endswith(",1") and (b / "dstlnk").read_bytes() == b"old\n"
    with open(b / "open", "rb") as f:
        os.unlink(b / "open")
        assert os.fstat(f.fileno()).st_nlink == 0
    os.mkfifo(b / "p")
    os.link(b / "p", b / "p2")
    [p_, p2_] = _ino_nlink(b / "p", b / "p2")
    assert p_ == p2_ and p_.endswith(",2")


def test_links_survive_renames_and_stay_apart_from_copies(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"a": b"x"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    os.mkdir(b / "d")
    os.link(b / "a", b / "d" / "b")
    os.rename(b / "d" / "b", b / "c")  # a renamed name is still a name of it
    sh("cp", str(b / "a"), str(b / "copy"))  # a copy is a file of its own
    (b / "c").write_bytes(b"through c")
    assert (b / "a").read_bytes() == b"through c" and (b / "copy").read_bytes() == b"x"
    assert os.stat(b / "a").st_ino == os.stat(b / "c").st_ino != os.stat(b / "copy").st_ino
    head = view.wait_committed("r", "master", lambda c: view.read("r", c, "a") == b"through c", m)
    assert view.info("r", head, "c").nlink == 2 and view.info("r", head, "copy").link is None


def test_a_renamed_name_of_a_linked_fifo_or_symlink_is_still_a_name_of_it(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b"x"})
    m = mounts("--idle", "0.2")
    b = mnt / "r" / "master"
    os.mkfifo(b / "p")
    os.symlink("seed", b / "s")
    for name in ("p", "s"):
        os.link(b / name, b / f"{name}2", follow_symlinks=False)
        os.rename(b / f"{name}2", b / f"{name}3")
        assert [os.lstat(b / n).st_nlink for n in (name, f"{name}3")] == [2, 2], name
    head = view.wait_committed("r", "master", lambda c: view.exists("r", c, "s3"), m)
    for name in ("p", "s"):
        one, other = view.info("r", head, name), view.info("r", head, f"{name}3")
        assert (one.nlink, other.nlink) == (2, 2) and one.link == other.link is not None, name


def _linked_source(top: Path) -> Path:
    top.mkdir()
    (top / "sub").mkdir()
    (top / "one").write_bytes(b"one\n")
    os.link(top / "one", top / "sub" / "one-again")
    os.link(top / "one", top / "three")
    (top / "alone").write_bytes(b"alone\n")
    return top


@pytest.mark.parametrize("tool", ["tar", "cp", "rsync"])
def test_tools_carry_hard_links_in_and_out(tool, daemon, view, mounts, mnt, tmp_home):
    src = _linked_source(tmp_home / "src")
    expected = [{"one", "sub/one-again", "three"}]
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    m = mounts("--idle", "1")
    dst = mnt / "r" / "master" / "copy"
    back = tmp_home / "back"
    if tool == "tar":
        dst.mkdir()
        subprocess.run(f"tar -C {src} -cf - . | tar -C {dst} -xpf -", shell=True, check=True)
    elif tool == "cp":
        sh("cp", "-a", str(src), str(dst))
    else:
        sh("rsync", "-aH", f"{src}/", f"{dst}/")
    assert _groups(dst) == expected
    assert os.stat(dst / "three").st_nlink == 3
    m.__exit__(None, None, None)
    mounts()
    assert _groups(dst) == expected  # kept in the commit
    if tool == "tar":
        back.mkdir()
        subprocess.run(f"tar -C {dst} -cf - . | tar -C {back} -xpf -", shell=True, check=True)
    elif tool == "cp":
        sh("cp", "-a", str(dst), str(back))
    else:
        sh("rsync", "-aH", f"{dst}/", f"{back}/")
    assert _groups(back) == expected
    assert (back / "sub" / "one-again").read_bytes() == b"one\n"


def test_get_file_and_put_file_recursive_keep_hard_links(daemon, view, tmp_home):
    src = _linked_source(tmp_home / "src")
    view.client.create_repo("r")
    daemon.pfs("put-file", "r", "master", "in", "-r", "-f", str(src))
    infos = {p: view.info("r", "master", f"in/{p}") for p in ("one", "sub/one-again", "three", "alone")}
    assert infos["one"].link is not None and infos["alone"].link is None
    assert {infos[p].link for p in ("one", "sub/one-again", "three")} == {infos["one"].link}
    assert infos["three"].nlink == 3
    shown = daemon.pfs("inspect-file", "r", "master", "in/three").stdout.decode()
    assert f"3 (hard link {infos['one'].link:x})" in shown
    got = tmp_home / "got"
    daemon.pfs("get-file", "r", "master", "in", "-r", "-o", str(got))
    assert _groups(got) == [{"one", "sub/one-again", "three"}]
    assert (got / "three").read_bytes() == b"one\n" and (got / "alone").read_bytes() == b"alone\n"
