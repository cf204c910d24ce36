"""The mounted tree: repos, branches, commit ids and refs as directories; attributes, inode
numbers, statfs, extended attributes; a branch following its new commits."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from mountkit import sh

from helpers import PFS, fuse_unavailable, wait_for

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


@pytest.fixture
def history(view):
    """Repo r: three commits on master, branch dev at the first; repo q: one commit.

    c1: a.txt=v1, d/b.txt        (dev)
    c2: a.txt=v2, d/c.txt
    c3: e/deep/f.bin             (master)
    """
    view.client.create_repo("r")
    view.client.create_repo("q")
    c1 = view.put("r", "master", {"a.txt": b"version 1\n", "d/b.txt": b"bee\n"})
    c2 = view.put("r", "master", {"a.txt": b"version 2 is longer\n", "d/c.txt": b"sea\n"})
    c3 = view.put("r", "master", {"e/deep/f.bin": os.urandom(200_000)})
    view.client.create_branch("r", "dev", head=c1)
    q1 = view.put("q", "master", {"only.txt": b"q\n"})
    return {"c1": c1, "c2": c2, "c3": c3, "q1": q1}


def test_repos_branches_commits_and_refs(history, view, mounts, mnt):
    c1, c2, c3 = history["c1"], history["c2"], history["c3"]
    mounts()
    assert set(os.listdir(mnt)) == {"r", "q"}
    # Branches are listed; commit ids and refs are not, but are reachable by name.
    assert set(os.listdir(mnt / "r")) == {"master", "dev"}
    assert (mnt / "r" / "master" / "a.txt").read_bytes() == b"version 2 is longer\n"
    assert (mnt / "r" / "dev" / "a.txt").read_bytes() == b"version 1\n"
    assert set(os.listdir(mnt / "r" / "dev")) == {"a.txt", "d"}
    assert set(os.listdir(mnt / "r" / "master")) == {"a.txt", "d", "e"}
    assert set(os.listdir(mnt / "r" / "master" / "d")) == {"b.txt", "c.txt"}
    assert (mnt / "r" / c1 / "a.txt").read_bytes() == b"version 1\n"
    assert set(os.listdir(mnt / "r" / c1)) == {"a.txt", "d"}
    assert (mnt / "r" / c2 / "d" / "c.txt").read_bytes() == b"sea\n"
    assert (mnt / "r" / c3 / "e" / "deep" / "f.bin").stat().st_size == 200_000
    # Ancestry refs as path components (Pachyderm 1.7: ^N and ~N are the Nth ancestor).
    assert (mnt / "r" / "master^1" / "a.txt").read_bytes() == b"version 2 is longer\n"
    assert not (mnt / "r" / "master^1" / "e").exists()
    assert (mnt / "r" / "master~1" / "d" / "c.txt").read_bytes() == b"sea\n"
    assert (mnt / "r" / "master^2" / "a.txt").read_bytes() == b"version 1\n"
    assert (mnt / "r" / "master~2" / "a.txt").read_bytes() == b"version 1\n"
    assert (mnt / "r" / "master^" / "a.txt").read_bytes() == b"version 2 is longer\n"
    assert set(os.listdir(mnt / "r" / "master~2")) == {"a.txt", "d"}
    ls = sh("ls", "-l", str(mnt / "r" / "master^1"))
    assert b"a.txt" in ls.stdout
    assert set(os.listdir(mnt / "r")) == {"master", "dev"}, "looking refs up must not list them"
    # Names that resolve to nothing.
    for missing in [
        mnt / "nosuchrepo",
        mnt / "r" / "nosuchbranch",
        mnt / "r" / "master~9",
        mnt / "r" / ("0" * 32),
        mnt / "r" / "master" / "nosuchfile",
    ]:
        assert not missing.exists(), missing
        with pytest.raises(FileNotFoundError):
            os.stat(missing)


def test_repos_option_limits_the_repos(history, mounts, mnt):
    mounts("--repos", "q")
    assert os.listdir(mnt) == ["q"]
    assert (mnt / "q" / "master" / "only.txt").read_bytes() == b"q\n"


def test_c_option_shows_a_ref_at_the_repo_level(history, mounts, mnt):
    c1 = history["c1"]
    mounts("-c", "r:master~1", "-c", f"q:{history['q1']}")
    assert set(os.listdir(mnt / "r")) == {"a.txt", "d"}, "no branch level under a -c repo"
    assert (mnt / "r" / "a.txt").read_bytes() == b"version 2 is longer\n"
    assert (mnt / "r" / "d" / "c.txt").read_bytes() == b"sea\n"
    assert (mnt / "q" / "only.txt").read_bytes() == b"q\n"
    xattr_commit = os.getxattr(mnt / "r" / "a.txt", "user.pfs.commit").decode()
    assert xattr_commit == history["c2"]
    assert c1 != history["c2"]


def test_attributes(history, view, mounts, mnt):
    c1, c3 = history["c1"], history["c3"]
    view.symlink("r", "master", "link", "/etc/hostname")
    view.chmod("r", "master", "d/b.txt", True)
    head = view.head("r", "master")
    mounts()
    base = mnt / "r" / "master"
    st = os.stat(base / "a.txt")
    assert stat.S_ISREG(st.st_mode) and st.st_size == len(b"version 2 is longer\n")
    assert st.st_mode & 0o444 == 0o444, "committed files are readable by all"
    assert st.st_nlink >= 1
    assert st.st_blocks * 512 >= st.st_size, "st_blocks lets du count the file"
    assert st.st_uid == os.getuid(), "files appear owned by the user who mounted"
    assert stat.S_ISDIR(os.stat(base / "d").st_mode)
    assert stat.S_ISDIR(os.stat(mnt / "r").st_mode) and stat.S_ISDIR(os.stat(mnt).st_mode)
    assert os.stat(base / "d" / "b.txt").st_mode & 0o111, "the executable bit shows"
    assert not os.stat(base / "a.txt").st_mode & 0o111
    assert stat.S_ISLNK(os.lstat(base / "link").st_mode)
    assert os.readlink(base / "link") == "/etc/hostname"
    assert os.stat(base / "e" / "deep" / "f.bin").st_size == 200_000
    # mtime is the commit's finish time (a file written in that very commit, so that both "the
    # commit shown" and "the commit that last wrote the file" agree).
    c1_info = view.commit("r", c1)
    assert abs(os.stat(mnt / "r" / c1 / "a.txt").st_mtime - c1_info.finished) < 1.0
    c3_info = view.commit("r", c3)
    assert abs(os.stat(mnt / "r" / c3 / "e" / "deep" / "f.bin").st_mtime - c3_info.finished) < 1.0
    assert os.stat(base / "a.txt").st_mtime <= time.time() + 1
    assert head.finished is not None


def test_inode_numbers_are_stable_and_distinct(history, view, mounts, mnt, daemon):
    c2 = history["c2"]
    paths = [
        mnt / "r",
        mnt / "r" / "master",
        mnt / "r" / "master" / "a.txt",
        mnt / "r" / "master" / "e" / "deep" / "f.bin",
        mnt / "r" / c2 / "d" / "c.txt",
        mnt / "r" / "dev" / "d" / "b.txt",
    ]
    m = mounts()
    first = [os.stat(p).st_ino for p in paths]
    assert [os.stat(p).st_ino for p in paths] == first
    if os.geteuid() == 0:  # forget the kernel's dentries and inodes: new lookups must agree
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
        assert [os.stat(p).st_ino for p in paths] == first
    # Distinct paths, distinct inode numbers (tar, du, rsync -H take equal ones for hard links).
    inos: dict[int, str] = {}
    for dirpath, dirs, files in os.walk(mnt / "r" / "master"):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            ino = os.lstat(p).st_ino
            assert ino not in inos, f"{p} and {inos.get(ino)} share inode {ino}"
            inos[ino] = p
    m.unmount()
    mounts()
    assert [os.stat(p).st_ino for p in paths] == first, "inode numbers change across remounts"


def test_statfs_answers(history, mounts, mnt):
    mounts()
    sv = os.statvfs(mnt)
    assert sv.f_bsize > 0 and sv.f_namemax > 0
    assert sv.f_blocks >= sv.f_bfree
    df = sh("df", str(mnt))
    assert str(mnt) in df.stdout.decode()
    sh("df", "-i", str(mnt))
    sh("stat", "-f", str(mnt / "r" / "master"))


def test_extended_attributes(history, view, mounts, mnt):
    c1, c3 = history["c1"], history["c3"]
    mounts()
    f = mnt / "r" / "master" / "d" / "b.txt"
    assert os.listxattr(f) == []  # the mount's own are read by name: copies made out do not carry them
    assert os.getxattr(f, "user.pfs.repo") == b"r"
    assert os.getxattr(f, "user.pfs.commit").decode() == c3, "a branch path names its head commit"
    # Assumption: the path is the file's path in the repo, with or without a leading '/'.
    assert os.getxattr(f, "user.pfs.path").decode().lstrip("/") == "d/b.txt"
    # Assumption: user.pfs.hash is the store's hex content hash, as `pfs inspect-file` shows it.
    assert os.getxattr(f, "user.pfs.hash").decode() == view.info("r", "master", "d/b.txt").hash
    g = mnt / "r" / c1 / "a.txt"
    assert os.getxattr(g, "user.pfs.commit").decode() == c1
    assert os.getxattr(g, "user.pfs.hash").decode() == view.info("r", c1, "a.txt").hash
    assert os.getxattr(mnt / "r" / "master^2" / "a.txt", "user.pfs.commit").decode() == c1
    out = sh("getfattr", "-n", "user.pfs.commit", str(f)).stdout.decode()
    assert c3 in out, out
    with pytest.raises(OSError) as missing:
        os.getxattr(f, "user.pfs.no-such-attribute")
    assert missing.value.errno == errno.ENODATA
    # No ACLs or labels: ENOTSUP, which `ls -l` remembers per device instead of asking per file.
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as unsupported:
            os.getxattr(f, name)
        assert unsupported.value.errno == errno.ENOTSUP, name


def test_copies_carrying_the_mounts_attributes_come_back_in(history, mounts, mnt, tmp_path):
    """A copy made elsewhere with the mount's own attributes (`tar --xattrs` of files that carry
    user.pfs.*) comes back in: setting or removing them is accepted and changes nothing, since
    they describe the entry."""
    mounts()
    b = mnt / "r" / "master"
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.txt").write_bytes(b"bee\n")
    try:
        os.setxattr(out / "b.txt", "user.pfs.path", b"/d/b.txt")
    except OSError as e:
        pytest.skip(f"the test's scratch directory keeps no user attributes: {e}")
    sh("tar", "--xattrs", "-C", str(out), "-cf", str(tmp_path / "x.tar"), ".")
    (b / "untarred").mkdir()
    sh("tar", "--xattrs", "-C", str(b / "untarred"), "-xf", str(tmp_path / "x.tar"))
    assert (b / "untarred" / "b.txt").read_bytes() == b"bee\n"
    assert os.getxattr(b / "untarred" / "b.txt", "user.pfs.path").decode().lstrip("/") == "untarred/b.txt"
    os.removexattr(b / "untarred" / "b.txt", "user.pfs.repo")
    assert os.getxattr(b / "untarred" / "b.txt", "user.pfs.repo") == b"r"


def test_a_branch_follows_new_commits_within_a_second(history, daemon, view, mounts, mnt):
    mounts()
    base = mnt / "r" / "master"
    # Prime every cache the kernel keeps: the listing, the entry, the attributes and the pages.
    assert "new.txt" not in os.listdir(base)
    assert not (base / "new.txt").exists()
    assert (base / "a.txt").read_bytes() == b"version 2 is longer\n"
    # "Within a second": measured from the end of `pfs put-file`; 0.5 s of slack for a loaded VM.
    subprocess.run(
        [PFS, "put-file", "r", "master", "new.txt"],
        input=b"new\n",
        env=daemon.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(lambda: (base / "new.txt").exists(), 1.5, what="a new file to show in the branch")
    assert (base / "new.txt").read_bytes() == b"new\n"
    assert "new.txt" in os.listdir(base)
    subprocess.run(
        [PFS, "put-file", "r", "master", "a.txt"],
        input=b"version 3\n",
        env=daemon.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(
        lambda: (base / "a.txt").read_bytes() == b"version 3\n",
        1.5,
        what="an overwritten file's new content to show (no stale size, pages or mtime)",
    )
    assert os.stat(base / "a.txt").st_size == len(b"version 3\n")
    subprocess.run(
        [PFS, "delete-file", "r", "master", "new.txt"], env=daemon.env, check=True, capture_output=True, timeout=60
    )
    wait_for(lambda: not (base / "new.txt").exists(), 1.5, what="a deleted file to go")
    # The commit ids in the mount do not move.
    assert (mnt / "r" / history["c2"] / "a.txt").read_bytes() == b"version 2 is longer\n"
    # Assumption: a new branch is listed soon (the contract lists every branch; 5 s deadline).
    view.client.create_branch("r", "fresh", head=history["c1"])
    wait_for(lambda: "fresh" in os.listdir(mnt / "r"), 5, what="a new branch to be listed")
    assert (mnt / "r" / "fresh" / "a.txt").read_bytes() == b"version 1\n"
