"""The mount keeps what a disk keeps about an entry: the full mode, the owner and the times, in
the commit (a remount shows them again), apart from the content hash; `tar` and `rsync -a` round
trips through the mount come back as they went in. The tests run as root (as the suite does), so
that owners can be given away as tar and rsync do."""

from __future__ import annotations

import grp
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountkit import sh

from helpers import fuse_unavailable

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
    pytest.mark.skipif(os.geteuid() != 0, reason="giving files to other owners needs root"),
]

T1 = 1_500_000_000_123_456_789  # an mtime with nanoseconds
T2 = 1_400_000_000_000_000_000


def _snapshot(top: Path) -> dict[str, tuple]:
    """What a disk shows of every entry under `top` (not `top` itself): kind, permission bits,
    owner, mtime (whole seconds, as tar keeps it) and the content or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode):
                what = st.st_rdev
            elif stat.S_ISREG(st.st_mode):
                what = p.read_bytes()
            else:
                what = None
            rel = str(p.relative_to(top))
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns // 10**9,
                what,
            )
    return out


def _source(top: Path) -> Path:
    """A tree with every permission bit a disk keeps, owners other than ours and old times."""
    top.mkdir()
    (top / "setuid").write_bytes(b"#!/bin/sh\n")
    (top / "private").write_bytes(b"secret\n")
    (top / "shared").mkdir()
    (top / "shared" / "group-file").write_bytes(b"g\n")
    (top / "sticky").mkdir()
    os.symlink("../private", top / "shared" / "link")
    os.mkfifo(top / "shared" / "pipe", 0o620)
    os.mknod(top / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    modes = {"setuid": 0o4755, "private": 0o600, "shared": 0o2750, "shared/group-file": 0o640, "sticky": 0o1777}
    for i, rel in enumerate(["setuid", "private", "shared/group-file", "shared/link", "sticky", "shared"]):
        os.chown(top / rel, 1000 + i, 2000 + i, follow_symlinks=False)
        os.utime(top / rel, ns=(T2 + i * 10**9, T2 + i * 10**9), follow_symlinks=False)
    for rel, mode in modes.items():  # (after chown, which clears setuid and setgid)
        os.chmod(top / rel, mode)
    return top


def test_chmod_chown_and_utime_are_kept_in_the_commit(daemon, view, mounts, mnt, tmp_home):
    view.client.create_repo("r")
    view.put("r", "master", {"old.txt": b"stored before\n"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    old_umask = os.umask(0)
    try:
        fd = os.open(b / "new.bin", os.O_CREAT | os.O_WRONLY, 0o640)
        os.write(fd, b"data")
        os.close(fd)
        os.mkdir(b / "d", 0o1777)
        os.symlink("new.bin", b / "link")
        assert os.readlink(b / "link") == "new.bin"  # a symlink from the first moment
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(b / "new.bin").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(b / "d").st_mode) == 0o1777
    os.chown(b / "new.bin", 1234, 4321)
    os.chmod(b / "new.bin", 0o4751)  # (after: a chown clears setuid, on a disk too)
    os.utime(b / "new.bin", ns=(T1, T1))
    os.chmod(b / "old.txt", 0o600)  # stored without a stat: it gets one, its content unchanged
    os.utime(b / "d", ns=(T2, T2))
    os.chown(b / "link", 77, 88, follow_symlinks=False)
    before = view.info("r", "master", "old.txt").hash
    expected = {
        "new.bin": (0o4751, 1234, 4321, T1),
        "d": (0o1777, 0, 0, T2),
        "old.txt": (0o600, 0, 0, None),
        "link": (0o777, 77, 88, None),
    }

    def check(top: Path) -> None:
        for rel, (mode, uid, gid, mtime) in expected.items():
            st = os.lstat(top / rel)
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), rel
            if mtime is not None:
                assert st.st_mtime_ns == mtime, rel
        assert os.path.islink(top / "link") and os.readlink(top / "link") == "new.bin"

    check(b)
    head = view.wait_committed(
        "r", "master", lambda c: view.exists("r", c, "link") and view.info("r", c, "link").uid == 77, m
    )
    info = view.info("r", head, "new.bin")
    assert (info.mode, info.uid, info.gid, info.mtime) == (0o4751, 1234, 4321, T1)
    assert view.info("r", head, "old.txt").hash == before  # chmod is not a content change
    assert view.info("r", head, "link").type == "symlink"
    check(b)  # once the daemon has it
    m.__exit__(None, None, None)
    mounts()
    check(b)  # a new mount of the store
    check(mnt / "r" / head)  # and the commit itself


@pytest.mark.parametrize("tool", ["tar", "rsync"])
def test_tar_and_rsync_round_trips_keep_modes_owners_times_and_links(tool, daemon, view, mounts, mnt, tmp_home):
    src = _source(tmp_home / "src")
    expected = _snapshot(src)
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    m = mounts("--idle", "1")
    dst = mnt / "r" / "master" / "copy"
    if tool == "tar":
        dst.mkdir()
        subprocess.run(f"tar -C {src} -cf - . | tar -C {dst} -xpf -", shell=True, check=True)
    else:
        sh("rsync", "-a", f"{src}/", f"{dst}/")
    assert _snapshot(dst) == expected
    m.__exit__(None, None, None)
    mounts()
    assert _snapshot(dst) == expected  # kept in the commit
    back = tmp_home / "back"
    back.mkdir()
    subprocess.run(f"tar -C {dst} -cf - . | tar -C {back} -xpf -", shell=True, check=True)
    assert _snapshot(back) == expected
    got = tmp_home / "got"  # and out of the store without the mount
    daemon.pfs("get-file", "r", "master", "copy", "-r", "-o", str(got))
    assert _snapshot(got) == expected


@pytest.fixture
def other_user() -> Iterator[str]:
    """A user of this machine that is not us, made for the test and removed after it."""
    name = f"pfs{os.getpid()}"
    sh("useradd", "--no-create-home", "--shell", "/bin/sh", name)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def _as(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_allow_other_serves_other_users_by_the_stored_modes(daemon, view, mounts, mnt, tmp_home, other_user):
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    os.chmod(tmp_home, 0o711)  # (the other user passes through to the mount point)
    m = mounts("--allow-other", "--idle", "1")
    b = mnt / "r" / "master"
    (b / "public.txt").write_bytes(b"for everyone\n")
    (b / "secret.txt").write_bytes(b"for root\n")
    os.chmod(b / "secret.txt", 0o600)
    os.mkdir(b / "drop")
    os.chmod(b / "drop", 0o1777)
    assert _as(other_user, "cat", str(b / "public.txt")).stdout == "for everyone\n"
    denied = _as(other_user, "cat", str(b / "secret.txt"))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert _as(other_user, "touch", str(b / "mine.txt")).returncode != 0  # the branch is 0755, root's
    made = _as(other_user, "sh", "-c", f"echo hi > {b}/drop/theirs.txt && chmod 640 {b}/drop/theirs.txt")
    assert made.returncode == 0, made.stderr
    uid = int(_as(other_user, "id", "-u").stdout)
    st = os.stat(b / "drop" / "theirs.txt")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o640)
    view.wait_committed("r", "master", lambda c: view.exists("r", c, "drop/theirs.txt"), m)
    assert view.info("r", "master", "drop/theirs.txt").uid == uid


def test_fifos_sockets_and_devices_are_made_and_kept(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    os.mkfifo(b / "pipe", 0o640)
    os.mknod(b / "tty", 0o600 | stat.S_IFCHR, os.makedev(5, 0))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(b / "sock"))
    kinds = {"pipe": stat.S_IFIFO, "tty": stat.S_IFCHR, "sock": stat.S_IFSOCK}

    def check() -> None:
        for name, kind in kinds.items():
            assert stat.S_IFMT(os.lstat(b / name).st_mode) == kind, name
        assert os.lstat(b / "tty").st_rdev == os.makedev(5, 0)
        assert stat.S_IMODE(os.lstat(b / "pipe").st_mode) == 0o640

    check()
    view.wait_committed("r", "master", lambda c: view.exists("r", c, "sock"), m)
    assert {n: view.info("r", "master", n).type for n in kinds} == {"pipe": "fifo", "tty": "char", "sock": "socket"}
    check()
    m.__exit__(None, None, None)
    mounts()
    check()


def test_other_users_calls_are_checked_as_a_disk_checks_them(daemon, view, mounts, mnt, tmp_home, other_user):
    """Through --allow-other the kernel checks other users' calls: the owner gives a file to a
    group it belongs to only as a supplementary group, and a non-owner's write clears setuid."""
    group = f"{other_user}g"
    sh("groupadd", group)
    try:
        sh("usermod", "-a", "-G", group, other_user)
        view.client.create_repo("r")
        view.put("r", "master", {"seed": b""})
        os.chmod(tmp_home, 0o711)
        mounts("--allow-other", "--idle", "1")
        b = mnt / "r" / "master"
        os.mkdir(b / "drop")
        os.chmod(b / "drop", 0o1777)
        made = _as(other_user, "sh", "-c", f"echo x > {b}/drop/f && chgrp {group} {b}/drop/f")
        assert made.returncode == 0, made.stderr
        assert os.stat(b / "drop" / "f").st_gid == grp.getgrnam(group).gr_gid
        refused = _as(other_user, "chgrp", "root", str(b / "drop" / "f"))  # not one of its groups
        assert refused.returncode != 0 and "not permitted" in refused.stderr

        (b / "suid").write_bytes(b"#!/bin/sh\n")
        os.chmod(b / "suid", 0o4777)
        wrote = _as(other_user, "sh", "-c", f"echo more >> {b}/suid")
        assert wrote.returncode == 0, wrote.stderr
        assert stat.S_IMODE(os.stat(b / "suid").st_mode) == 0o777  # the kernel cleared setuid
    finally:
        subprocess.run(["groupdel", group], check=False)


def test_setuid_and_setgid_go_as_on_a_disk(daemon, view, mounts, mnt, tmp_home, other_user):
    """The mount drops setuid and setgid itself (the kernel leaves it to the mount): on a write,
    a truncate, a fallocate or an open that truncates by anyone but root, and on any chown;
    setgid without group execute (which marks mandatory locking) stays. The commit keeps what
    is shown."""
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    os.chmod(tmp_home, 0o711)
    m = mounts("--allow-other", "--idle", "1")
    b = mnt / "r" / "master"

    def made(name: str, mode: int) -> str:
        (b / name).write_bytes(b"#!/bin/sh\n")
        os.chmod(b / name, mode)
        return str(b / name)

    with open(made("by-root", 0o6777), "ab") as f:
        f.write(b"root keeps them\n")
    others = {
        "written": ["sh", "-c", f"echo more >> {b}/written"],
        "truncated": ["truncate", "-s", "1", str(b / "truncated")],
        "emptied": ["sh", "-c", f": > {b}/emptied"],
        "locking": ["sh", "-c", f"echo more >> {b}/locking"],
        "allocated": ["fallocate", "-l", "8192", str(b / "allocated")],
    }
    for name, argv in others.items():
        made(name, 0o2766 if name == "locking" else 0o6777)
        done = _as(other_user, *argv)
        assert done.returncode == 0, done.stderr
    made("given", 0o6755)
    os.chown(b / "given", 1000, 1000)
    expected = {
        "by-root": 0o6777,
        "written": 0o777,
        "truncated": 0o777,
        "emptied": 0o777,
        "allocated": 0o777,
        "locking": 0o2766,
        "given": 0o755,
    }
    assert {n: stat.S_IMODE(os.stat(b / n).st_mode) for n in expected} == expected
    view.wait_committed(
        "r",
        "master",
        lambda c: all(view.exists("r", c, n) and view.info("r", c, n).mode == mode for n, mode in expected.items()),
        m,
    )


def test_a_write_is_one_request(daemon, view, mounts, mnt):
    """Since the mount drops setuid itself, the kernel no longer asks for a file's
    security.capability (a GETXATTR) before each write(2): counted by the kernel's own FUSE
    trace events, in a trace instance of this test's."""
    tracing = Path("/sys/kernel/tracing")
    if not (tracing / "instances").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracing)], check=False, capture_output=True)
    if not (tracing / "events" / "fuse").is_dir():
        pytest.skip("no tracefs with FUSE events here")
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b""})
    mounts("--idle", "1")
    instance = tracing / "instances" / f"pfs-test-{os.getpid()}"
    instance.mkdir()
    try:
        event = instance / "events" / "fuse" / "fuse_request_send"
        fd = os.open(mnt / "r" / "master" / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            (event / "filter").write_text(f"connection == {os.minor(os.fstat(fd).st_dev)}")
            (event / "enable").write_text("1")
            for i in range(100):
                os.pwrite(fd, b"x" * 4096, i * 4096)
            (event / "enable").write_text("0")
        finally:
            os.close(fd)
        sent = (instance / "trace").read_text()
        assert sent.count("FUSE_WRITE") == 100
        assert sent.count("FUSE_GETXATTR") <= 1  # (before the first write, the kernel learns there is none)
    finally:
        instance.rmdir()


def test_a_directory_is_dated_by_its_entries_changes_at_once(daemon, view, mounts, mnt):
    """mkdir, create, unlink, rename and rmdir move the directory's mtime and ctime when they
    return, as on a disk (not when the daemon has the change); `open(O_TRUNC)` moves a file's."""
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b"12345"})
    mounts("--idle", "1")
    b = mnt / "r" / "master"
    os.mkdir(b / "d")
    past = 1_000_000_000_000_000_000
    steps = [
        lambda: os.mkdir(b / "d" / "sub"),
        lambda: (b / "d" / "f").write_bytes(b"x"),
        lambda: os.rename(b / "d" / "f", b / "d" / "g"),
        lambda: os.unlink(b / "d" / "g"),
        lambda: os.rmdir(b / "d" / "sub"),
    ]
    for step in steps:
        os.utime(b / "d", ns=(past, past))
        before = time.time_ns()
        step()
        st = os.stat(b / "d")  # at once: no poll
        assert st.st_mtime_ns >= before and st.st_ctime_ns >= before, step
    os.utime(b / "seed", ns=(past, past))
    with open(b / "seed", "r+b") as f:
        f.truncate(0)
    assert os.stat(b / "seed").st_mtime_ns > past
    os.utime(b / "seed", ns=(past, past))
    fd = os.open(b / "seed", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(b / "seed").st_mtime_ns > past


def test_the_times_shown_at_once_are_the_ones_the_commit_keeps(daemon, view, mounts, mnt):
    """A directory's times shown when a call returns, and a renamed hard link's, are the ones
    stored: they do not move once the daemon has the change (times on a disk never move by
    themselves; `make` and backups compare them)."""
    view.client.create_repo("r")
    view.put("r", "master", {"seed": b"1"})
    m = mounts("--idle", "0.2")
    d = mnt / "r" / "master" / "d"
    d.mkdir()
    steps = [
        (lambda: (d / "a").write_bytes(b"x"), "a", True),
        (lambda: os.link(d / "a", d / "b"), "b", True),
        (lambda: os.rename(d / "b", d / "c"), "c", True),
        (lambda: os.unlink(d / "c"), "c", False),
        (lambda: os.mkdir(d / "sub"), "sub", True),
        (lambda: os.mkfifo(d / "p"), "p", True),
        (lambda: os.rmdir(d / "sub"), "sub", False),
    ]
    for step, name, there in steps:
        step()
        shown = {rel: (st.st_mtime_ns, st.st_ctime_ns) for rel, st in _lstats(d).items()}
        head = view.wait_committed(
            "r", "master", lambda c, p=f"d/{name}", there=there: view.exists("r", c, p) == there, m
        )
        infos = {rel: view.info("r", head, f"d/{rel}".rstrip("/")) for rel in shown}
        assert {rel: (i.mtime, i.ctime) for rel, i in infos.items()} == shown, name


def _lstats(d: Path) -> dict[str, os.stat_result]:
    """The lstat of `d` (as "") and of each entry in it, by name."""
    return {"": os.lstat(d)} | {e.name: e.stat(follow_symlinks=False) for e in os.scandir(d)}


def test_atime_is_kept_as_set_and_reads_do_not_move_it(daemon, view, mounts, mnt, tmp_home):
    view.client.create_repo("r")
    view.put("r", "master", {"f": b"data\n"})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    assert os.stat(b / "f").st_atime_ns == os.stat(b / "f").st_mtime_ns  # never set: the mtime
    os.utime(b / "f", ns=(T2, T1))
    (b / "f").read_bytes()
    st = os.stat(b / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (T2, T1)
    sh("touch", "-a", "-d", "@1300000000", str(b / "f"))  # the atime alone
    assert (os.stat(b / "f").st_atime_ns, os.stat(b / "f").st_mtime_ns) == (1_300_000_000 * 10**9, T1)
    head = view.wait_committed("r", "master", lambda c: view.info("r", c, "f").atime == 1_300_000_000 * 10**9, m)
    assert view.info("r", head, "f").mtime == T1
    m.__exit__(None, None, None)
    mounts()
    (b / "f").read_bytes()
    assert os.stat(b / "f").st_atime_ns == 1_300_000_000 * 10**9  # kept in the commit
    got = tmp_home / "got"
    daemon.pfs("get-file", "r", "master", "/", "-r", "-o", str(got))
    assert os.stat(got / "f").st_atime_ns == 1_300_000_000 * 10**9


def _links(top: Path) -> dict[str, int]:
    """The link count of every directory under `top`, `top` included ("")."""
    out = {"": os.stat(top).st_nlink}
    for dirpath, dirnames, _ in os.walk(top):
        for name in dirnames:
            p = Path(dirpath) / name
            out[str(p.relative_to(top))] = os.stat(p).st_nlink
    return out


def test_a_directory_counts_its_subdirectories_as_a_disk_does(daemon, view, mounts, mnt, tmp_home):
    """A directory's link count is 2 plus its subdirectories, through mkdir, rmdir and renames,
    at once (before the daemon has the change), once the daemon has it, and after a remount;
    directories put-file makes on the way to a file count too."""
    view.client.create_repo("r")
    view.put("r", "master", {"p/q/r.txt": b"x", "p/s/t.txt": b"y", "f": b""})
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    disk = tmp_home / "disk"
    subprocess.run(["cp", "-r", str(b), str(disk)], check=True)
    assert _links(b) == _links(disk) == {"": 3, "p": 4, "p/q": 2, "p/s": 2}
    steps = [
        lambda top: [os.mkdir(top / d) for d in ("a", "a/b", "a/c", "a/c/d", "x", "y", "z")],
        lambda top: os.rmdir(top / "a" / "c" / "d"),
        lambda top: os.rename(top / "a" / "b", top / "x" / "b"),  # to another directory
        lambda top: os.rename(top / "y", top / "z"),  # over an empty directory
        lambda top: os.rename(top / "f", top / "a" / "f"),  # a file: no count moves
        lambda top: os.rename(top / "p", top / "a" / "p"),  # a stored directory, with its own
    ]
    for step in steps:
        step(b)
        step(disk)
        assert _links(b) == _links(disk), step  # at once: no poll
    expected = _links(disk)
    view.wait_committed("r", "master", lambda c: view.exists("r", c, "a/p/q/r.txt"), m)
    assert _links(b) == expected  # as the daemon's tree counts them
    m.__exit__(None, None, None)
    mounts()
    assert _links(b) == expected
