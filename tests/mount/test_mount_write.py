"""Writing through the mount: real tools in, every file operation of the contract, reads of one's
own writes, when the mount's commits are finished, and EROFS wherever writes are not allowed."""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import stat
import threading
from pathlib import Path

import pytest
from mountkit import MiB, chunk_bytes, sh, stays, tree_files

from helpers import PFS, fuse_unavailable, wait_for

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


@pytest.fixture
def repo(view) -> str:
    """Repo r with one finished commit on master; returns its id."""
    view.client.create_repo("r")
    return view.put(
        "r",
        "master",
        {
            "keep.txt": b"committed before the mount\n",
            "old/x.txt": b"x\n",
            "old/y.txt": b"y\n",
            "seed.bin": random.Random(1).randbytes(2 * MiB),
        },
    )


def _committed_tree(view, cid: str, path: str, src: Path) -> None:
    assert view.files("r", cid, path) == tree_files(src)
    assert view.info("r", cid, f"{path}/run.sh").executable
    assert not view.info("r", cid, f"{path}/hello.txt").executable


def test_cp_r_in_then_diff_and_commit(repo, view, src_tree, mounts, mnt):
    m = mounts("--idle", "1")
    dest = mnt / "r" / "master" / "in"
    sh("cp", "-r", str(src_tree), str(dest))
    sh("diff", "-r", str(src_tree), str(dest))  # read your writes, before any commit is finished
    cid = view.wait_committed("r", "master", lambda c: view.exists("r", c, "in/run.sh"), m)
    _committed_tree(view, cid, "in", src_tree)
    sh("diff", "-r", str(src_tree), str(mnt / "r" / cid / "in"))
    assert view.files("r", cid, "old") == {"x.txt": b"x\n", "y.txt": b"y\n"}, "the rest of the branch stays"


def test_rsync_a_in(repo, view, src_tree, mounts, mnt):
    # Assumes files show as owned by the user who mounted (root here), so that rsync -a run as
    # root has no owner to change: chown is not part of the contract.
    m = mounts("--idle", "1")
    dest = mnt / "r" / "master" / "rs"
    sh("rsync", "-a", f"{src_tree}/", f"{dest}/")  # temporary files, fchmod, utimens, rename
    sh("diff", "-r", str(src_tree), str(dest))
    assert os.access(dest / "run.sh", os.X_OK)
    cid = view.wait_committed("r", "master", lambda c: view.exists("r", c, "rs/run.sh"), m)
    _committed_tree(view, cid, "rs", src_tree)  # exactly the source's files: no temporary ones


def test_tar_x_in(repo, view, src_tree, mounts, mnt):
    m = mounts("--idle", "1")
    dest = mnt / "r" / "master" / "tarred"
    dest.mkdir()
    # --no-same-owner: tar run as root would chown every file, and chown is not in the contract.
    sh("sh", "-c", f'tar c -C "{src_tree}" . | tar x --no-same-owner -C "{dest}"')
    sh("diff", "-r", str(src_tree), str(dest))
    cid = view.wait_committed("r", "master", lambda c: view.exists("r", c, "tarred/run.sh"), m)
    _committed_tree(view, cid, "tarred", src_tree)


def _errno(fn, *args) -> int | None:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


def test_every_file_operation_reads_back_and_commits(repo, daemon, view, mounts, mnt):
    m = mounts("--idle", "3600")  # one commit, finished at unmount
    b = mnt / "r" / "master"
    # create, write, append, overwrite in the middle
    (b / "new.txt").write_bytes(b"hello")
    with open(b / "new.txt", "ab") as f:
        f.write(b" world")
    with open(b / "new.txt", "r+b") as f:
        f.seek(2)
        f.write(b"XY")
    assert (b / "new.txt").read_bytes() == b"heXYo world"
    # truncate: shrink, extend (zeros), ftruncate, O_TRUNC of a committed file
    os.truncate(b / "new.txt", 4)
    assert (b / "new.txt").read_bytes() == b"heXY"
    os.truncate(b / "new.txt", 10)
    assert (b / "new.txt").read_bytes() == b"heXY" + b"\0" * 6
    assert os.stat(b / "new.txt").st_size == 10
    with open(b / "keep.txt", "r+b") as f:
        f.truncate(9)
    assert (b / "keep.txt").read_bytes() == b"committed"
    (b / "seed.bin").write_bytes(b"rewritten")  # open(O_TRUNC) of a big committed file
    assert (b / "seed.bin").read_bytes() == b"rewritten"
    # mkdir, rmdir
    os.makedirs(b / "d1" / "d2")
    (b / "d1" / "d2" / "f").write_bytes(b"deep")
    assert _errno(os.mkdir, b / "d1") == errno.EEXIST
    assert _errno(os.rmdir, b / "d1") == errno.ENOTEMPTY
    assert _errno(os.rmdir, b / "keep.txt") == errno.ENOTDIR
    os.mkdir(b / "gone")
    os.rmdir(b / "gone")
    assert not (b / "gone").exists()
    os.mkdir(b / "empty")
    # unlink
    os.unlink(b / "old" / "y.txt")
    assert not (b / "old" / "y.txt").exists()
    assert _errno(os.unlink, b / "old" / "nosuchfile") == errno.ENOENT
    # names: 255 bytes is the limit, as on disk; any byte but NUL and '/' goes
    os.mkdir(b / "names")
    (b / "names" / ("é" * 127 + "x")).write_bytes(b"255 bytes")
    assert _errno(open, b / "names" / ("é" * 128), "w") == errno.ENAMETOOLONG
    (b / "names" / "a\nb c").write_bytes(b"odd name")
    assert (b / "names" / "a\nb c").read_bytes() == b"odd name"
    # rename: a file (mv), across directories, over an existing file, a directory
    sh("mv", str(b / "new.txt"), str(b / "renamed.txt"))
    os.rename(b / "d1" / "d2" / "f", b / "top-f")
    (b / "replacement").write_bytes(b"replaced")
    os.replace(b / "replacement", b / "old" / "x.txt")
    os.rename(b / "old", b / "older")
    assert set(os.listdir(b / "older")) == {"x.txt"}
    assert (b / "older" / "x.txt").read_bytes() == b"replaced"
    # symlink (outside the mount: stored as a symlink) and hard link
    os.symlink("/etc/hostname", b / "ext")
    assert os.readlink(b / "ext") == "/etc/hostname"
    os.link(b / "top-f", b / "hard")
    assert (b / "hard").read_bytes() == b"deep"
    # chmod of the executable bit
    (b / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(b / "script.sh", 0o755)
    assert os.stat(b / "script.sh").st_mode & 0o111
    assert sh(str(b / "script.sh")).stdout == b"hi\n"
    sh("chmod", "+x", str(b / "renamed.txt"))
    sh("chmod", "-x", str(b / "renamed.txt"))
    assert not os.stat(b / "renamed.txt").st_mode & 0o111
    # utimens (touch), also creating an empty file
    sh("touch", "-d", "2001-02-03 04:05:06", str(b / "keep.txt"))
    sh("touch", str(b / "touched"))
    assert os.stat(b / "touched").st_size == 0
    # fsync
    fd = os.open(b / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
    finally:
        os.close(fd)
    expected = {
        "keep.txt",
        "seed.bin",
        "d1",
        "empty",
        "renamed.txt",
        "top-f",
        "older",
        "ext",
        "hard",
        "script.sh",
        "touched",
        "synced",
        "names",
    }
    assert set(os.listdir(b)) == expected
    # The commit started by the writes stays open until unmount (--idle 3600).
    _open_commit(view, repo, mount=m)
    m.unmount()
    head = view.head("r", "master")
    assert head.finished is not None, "unmount finishes the mount's commit"
    got = {f.path: f for f in view.client.walk_file("r", head.id)}
    assert {p for p in got if p and "/" not in p} == expected
    assert view.read("r", head.id, "renamed.txt") == b"heXY" + b"\0" * 6
    assert view.read("r", head.id, "keep.txt") == b"committed"
    assert view.read("r", head.id, "seed.bin") == b"rewritten"
    assert view.read("r", head.id, "top-f") == b"deep"
    assert view.read("r", head.id, "hard") == b"deep"
    assert view.read("r", head.id, "older/x.txt") == b"replaced"
    assert view.read("r", head.id, "synced") == b"durable"
    assert view.read("r", head.id, "touched") == b""
    assert view.files("r", head.id, "names") == {"é" * 127 + "x": b"255 bytes", "a\nb c": b"odd name"}
    assert got["d1"].type == "dir" and got["d1/d2"].type == "dir" and "d1/d2/f" not in got
    assert got["empty"].type == "dir", "an empty directory made in the mount is committed"
    assert got["ext"].type == "symlink" and got["ext"].target == "/etc/hostname"
    assert got["script.sh"].executable and not got["renamed.txt"].executable
    assert "old" not in got and "older/y.txt" not in got
    assert view.files("r", repo) == {
        "keep.txt": b"committed before the mount\n",
        "old/x.txt": b"x\n",
        "old/y.txt": b"y\n",
        "seed.bin": random.Random(1).randbytes(2 * MiB),
    }
    fsck = sh(PFS, "fsck", env=daemon.env, check=False)
    assert fsck.returncode == 0, fsck.stderr.decode()


def test_commit_finishes_after_idle_and_not_while_a_file_is_open(repo, daemon, view, mounts, mnt):
    m = mounts("--idle", "1")
    b = mnt / "r" / "master"
    (b / "quick.txt").write_bytes(b"closed at once\n")

    def listed_finished() -> bool:  # what a user would look at: `pfs list-commit`, newest first
        newest = json.loads(daemon.pfs("list-commit", "r", "--json").stdout)[0]
        return newest["id"] != repo and newest.get("finished") is not None

    wait_for(listed_finished, 15, proc=m.process(), what="pfs list-commit to show the mount's commit finished")
    first = view.head("r", "master").id
    assert view.commit("r", first).parent == repo
    assert view.read("r", first, "quick.txt") == b"closed at once\n"
    with open(b / "held.txt", "wb") as f:
        f.write(b"part one\n")
        f.flush()
        os.fsync(f.fileno())

        def unfinished() -> bool:
            h = view.head("r", "master")
            return h.id == first or h.finished is None

        # A bounded observation (not a wait): 2.5 idle intervals with the file open for writing
        # must not finish the commit.
        assert stays(unfinished, 2.5), "the commit was finished while a file was open for writing"
        f.write(b"part two\n")
    second = view.wait_committed("r", "master", lambda c: view.exists("r", c, "held.txt"), m, timeout=15)
    assert view.read("r", second, "held.txt") == b"part one\npart two\n"
    assert view.commit("r", second).parent == first


def _open_commit(view, parent: str, timeout: float = 5.0, mount=None) -> str:
    """Wait (with a deadline) for the branch's head to be an open commit on top of `parent`.

    Assumption: "started on first write" allows the mount a moment (it may batch writes for a
    fraction of a second before they reach the daemon), hence a short deadline, not zero.
    """
    found: list[str] = []

    def open_on_parent() -> bool:
        h = view.head("r", "master")
        if h.finished is None and h.parent == parent:
            found.append(h.id)
            return True
        return False

    wait_for(
        open_on_parent,
        timeout,
        proc=mount.process() if mount else None,
        what="the mount's write to start an open commit on the daemon",
    )
    return found[0]


def test_unmount_finishes_the_mounts_commit(repo, view, mounts, mnt):
    m = mounts("--idle", "3600")
    (mnt / "r" / "master" / "a.txt").write_bytes(b"A")
    m.unmount()
    head = view.head("r", "master")
    assert head.finished is not None, "unmount finishes the commit the mount started"
    assert head.parent == repo and view.read("r", head.id, "a.txt") == b"A"


def test_the_first_write_starts_the_branchs_open_commit(repo, view, mounts, mnt):
    m = mounts("--idle", "3600")
    (mnt / "r" / "master" / "a.txt").write_bytes(b"A")
    cid = _open_commit(view, repo, mount=m)
    wait_for(
        lambda: view.exists("r", cid, "a.txt"), 5.0, proc=m.process(), what="a closed file to reach the open commit"
    )
    assert view.read("r", cid, "a.txt") == b"A"


def test_mkdir_makes_repos_and_branches(repo, view, mounts, mnt, tmp_home):
    m = mounts("--idle", "3600")
    assert stat.S_IMODE(os.stat(mnt).st_mode) == stat.S_IMODE(os.stat(mnt / "r").st_mode) == 0o755
    os.mkdir(mnt / "fresh")
    assert view.client.inspect_repo("fresh").name == "fresh" and "fresh" in os.listdir(mnt)
    os.mkdir(mnt / "fresh" / "master")
    assert os.listdir(mnt / "fresh" / "master") == [] and "master" in os.listdir(mnt / "fresh")
    (mnt / "fresh" / "master" / "a.txt").write_bytes(b"into a new repo")
    os.mkdir(mnt / "r" / "experiment")  # a branch with no commits, beside master
    (mnt / "r" / "experiment" / "b.txt").write_bytes(b"into a new branch")
    assert _errno(os.mkdir, mnt / "fresh") == errno.EEXIST
    assert _errno(os.mkdir, mnt / "r" / "master") == errno.EEXIST
    assert _errno(os.mkdir, mnt / "no spaces") == errno.EINVAL
    assert _errno(os.mkdir, mnt / "r" / "master^1") == errno.EINVAL  # not a branch's name
    assert _errno(os.mkdir, mnt / "r" / ("0" * 32)) == errno.EINVAL  # nor is a commit id
    assert _errno(os.mkdir, mnt / "r" / repo) == errno.EEXIST
    assert [b.name for b in view.client.list_branch("r")] == ["experiment", "master"]
    # A mount of some repos only makes no others: they would not show in it.
    other = tmp_home / "only-r"
    some = mounts("--repos", "r", at=other)
    assert _errno(os.mkdir, other / "elsewhere") == errno.EPERM
    assert [r.name for r in view.client.list_repo()] == ["fresh", "r"]
    some.unmount()
    m.unmount()
    assert view.files("fresh", "master") == {"a.txt": b"into a new repo"}
    assert view.files("r", "experiment") == {"b.txt": b"into a new branch"}
    assert view.head("r", "experiment").parent is None and view.head("r", "master").id == repo


def test_fsync_puts_the_data_in_the_open_commit(repo, view, mounts, mnt):
    # Assumption: fsync makes a write durable, which for this file system means that the daemon
    # has it in the branch's open commit when fsync returns, even with the file still open.
    mounts("--idle", "3600")
    with open(mnt / "r" / "master" / "synced.txt", "wb") as f:
        f.write(b"durable")
        f.flush()
        os.fsync(f.fileno())
        head = view.head("r", "master")
        assert head.finished is None and head.parent == repo, "fsync started no open commit"
        assert view.exists("r", head.id, "synced.txt"), "fsync returned before the daemon had the file"
        assert view.read("r", head.id, "synced.txt") == b"durable"


def test_fsync_of_a_few_writes_into_a_big_file_stores_what_they_touch(repo, daemon, view, mounts, mnt, tmp_path):
    """A database or fio's file: small writes into a big file, each batch fsynced. An fsync stores
    the chunks around the writes, not the file again; the close stores the file as put-file
    would, so its content hash is put-file's for the same bytes (what pipelines compare)."""
    mounts("--idle", "3600")
    rng = random.Random(3)
    data = bytearray(rng.randbytes(40 * MiB))
    path = mnt / "r" / "master" / "big.db"
    path.write_bytes(data)  # written and closed: stored whole with the first fsync
    with open(path, "r+b") as f:
        for i in range(4):
            before = chunk_bytes(daemon)
            for off in [rng.randrange(len(data) - 4096) for _ in range(4)]:
                data[off : off + 4096] = rng.randbytes(4096)
                f.seek(off)
                f.write(data[off : off + 4096])
            f.flush()
            os.fsync(f.fileno())
            if i:
                assert chunk_bytes(daemon) - before < 20 * MiB, "an fsync of 16 KiB stored most of a 40 MiB file"
            assert view.read("r", view.head("r", "master").id, "big.db") == data
    wait_for(lambda: view.read("r", "master", "big.db") == data, 10.0, what="the close's put")
    plain = tmp_path / "big.db"
    plain.write_bytes(data)
    view.put_local("r", "other", "big.db", plain)
    wait_for(
        lambda: view.info("r", "master", "big.db").hash == view.info("r", "other", "big.db").hash,
        10.0,
        what="the closed file's chunks to be put-file's",
    )


def test_appending_to_a_big_committed_file_keeps_put_files_chunks(repo, daemon, view, mounts, mnt, tmp_path):
    """`>>` onto a big committed file, and an fsync: the mount copies none of the file, its fsync
    and close name what changed (the daemon cuts the file's end again from the committed file's
    chunks, tests/store/test_store_sparse_puts.py), store only the new end, and leave the file
    with put-file's chunks and content hash for the same bytes."""
    data = random.Random(4).randbytes(40 * MiB)
    plain = tmp_path / "log.csv"
    plain.write_bytes(data)
    view.put_local("r", "master", "log.csv", plain)
    m = mounts("--idle", "3600")
    before, fetched = chunk_bytes(daemon), int(os.getxattr(mnt, "user.pfs.fetched"))
    with open(mnt / "r" / "master" / "log.csv", "ab") as f:
        f.write(b"one more line\n")
        f.flush()
        os.fsync(f.fileno())
    # The copy on write is sparse: the mount read nothing of the file to append to it.
    assert int(os.getxattr(mnt, "user.pfs.fetched")) == fetched
    m.unmount()  # sends the close and finishes the commit
    assert chunk_bytes(daemon) - before < 12 * MiB, "the close stored much more than the file's end"
    assert view.read("r", "master", "log.csv") == data + b"one more line\n"
    with open(plain, "ab") as f:
        f.write(b"one more line\n")
    view.put_local("r", "other", "log.csv", plain)
    assert view.info("r", "master", "log.csv").hash == view.info("r", "other", "log.csv").hash


def test_a_sparse_copy_whose_file_another_writer_replaced_is_sent_whole(repo, daemon, view, mounts, mnt, tmp_path):
    """A big committed file opened for writing (copied sparsely: the mount holds only what it
    writes), then replaced by another writer, or renamed while open: the daemon no longer has the
    file the copy lacks bytes of, so the mount fetches them from the committed file and sends
    the file whole. The mount's writes win, with every byte of the file they were made to."""
    data = random.Random(6).randbytes(20 * MiB)
    plain = tmp_path / "big.bin"
    plain.write_bytes(data)
    view.put_local("r", "master", "big.bin", plain)
    view.put_local("r", "master", "other.bin", plain)
    mounts("--idle", "3600")
    branch = mnt / "r" / "master"
    with open(branch / "big.bin", "r+b") as f:
        f.write(b"mine")
        other = tmp_path / "other"
        other.write_bytes(b"another writer's")
        view.put_local("r", "master", "big.bin", other)  # into the mount's open commit
        f.flush()
        os.fsync(f.fileno())
        assert view.read("r", "master", "big.bin") == b"mine" + data[4:]
    with open(branch / "other.bin", "r+b") as f:
        f.seek(10 * MiB)
        f.write(b"moved")
        os.rename(branch / "other.bin", branch / "moved.bin")
    wait_for(lambda: view.exists("r", "master", "moved.bin"), 10.0, what="the renamed file's close")
    assert view.read("r", "master", "moved.bin") == data[: 10 * MiB] + b"moved" + data[10 * MiB + 5 :]
    assert not view.exists("r", "master", "other.bin")


def test_pfs_finish_commit_while_mounted(repo, daemon, view, mounts, mnt):
    m = mounts("--idle", "3600")
    b = mnt / "r" / "master"
    (b / "a.txt").write_bytes(b"first")
    cid = _open_commit(view, repo, mount=m)
    wait_for(lambda: view.exists("r", cid, "a.txt"), 5.0, proc=m.process(), what="a.txt to reach the daemon")
    daemon.pfs("finish-commit", "r", "master")
    first = view.head("r", "master")
    assert first.id == cid and first.finished is not None and view.read("r", cid, "a.txt") == b"first"
    assert (b / "a.txt").read_bytes() == b"first"
    (b / "b.txt").write_bytes(b"second")  # the mount's commit was finished by someone else: a new one
    second = _open_commit(view, cid, mount=m)
    assert (b / "b.txt").read_bytes() == b"second" and (b / "a.txt").read_bytes() == b"first"
    m.unmount()
    head = view.head("r", "master")
    assert head.id == second and head.finished is not None
    assert view.read("r", second, "a.txt") == b"first" and view.read("r", second, "b.txt") == b"second"


def test_a_writer_and_a_reader_on_the_same_branch(repo, view, mounts, mnt):
    m = mounts("--idle", "1")  # commits may finish between writes: reads must not notice
    b = mnt / "r" / "master"
    seed = random.Random(1).randbytes(2 * MiB)
    rng = random.Random(2)
    written = {f"w/f{i:02d}.bin": rng.randbytes(rng.randrange(1, 200_000)) for i in range(30)}
    done: queue.Queue = queue.Queue()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            os.makedirs(b / "w", exist_ok=True)
            for i, (path, data) in enumerate(written.items()):
                with open(b / path, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    f.write(data[len(data) // 2 :])
                with open(b / "log.txt", "ab") as f:
                    f.write(b"%d\n" % i)
                done.put(path)
        except BaseException as e:
            failures.append(e)
        finally:
            done.put(None)

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    try:
        while True:
            try:
                path = done.get(timeout=60)
            except queue.Empty:
                raise AssertionError("the writer is stuck") from None
            if path is None:
                break
            seen += 1
            assert (b / path).read_bytes() == written[path], f"read of {path} right after it was closed"
            assert (b / "seed.bin").read_bytes() == seed
            assert (b / "keep.txt").read_bytes() == b"committed before the mount\n"
            # The writer may be ahead of us, never behind: every append so far is there, in order.
            lines = (b / "log.txt").read_bytes().splitlines()
            assert lines[:seen] == [b"%d" % i for i in range(seen)], lines
    finally:
        t.join(timeout=60)
    assert not failures, failures
    assert seen == len(written)
    assert sorted(os.listdir(b / "w")) == sorted(os.path.basename(p) for p in written)
    cid = view.wait_committed("r", "master", lambda c: view.exists("r", c, "w/f29.bin"), m)
    assert view.files("r", cid, "w") == {p[2:]: d for p, d in written.items()}
    assert view.read("r", cid, "log.txt") == b"".join(b"%d\n" % i for i in range(30))


def _write_attempts(base: Path) -> dict[str, object]:
    """Every kind of write the contract lists, aimed at `base` (which holds a.txt and emptyd/)."""
    return {
        "create": lambda: open(base / "new.txt", "wb").close(),
        "open for writing": lambda: open(base / "a.txt", "r+b").close(),
        "O_TRUNC": lambda: open(base / "a.txt", "wb").close(),
        "truncate": lambda: os.truncate(base / "a.txt", 0),
        "mkdir": lambda: os.mkdir(base / "nd"),
        "rmdir": lambda: os.rmdir(base / "emptyd"),
        "unlink": lambda: os.unlink(base / "a.txt"),
        "rename": lambda: os.rename(base / "a.txt", base / "b.txt"),
        "symlink": lambda: os.symlink("/etc/hostname", base / "ln"),
        "link": lambda: os.link(base / "a.txt", base / "hl"),
        "chmod": lambda: os.chmod(base / "a.txt", 0o755),
        "utimens": lambda: os.utime(base / "a.txt", (1, 1)),
    }


def _assert_all_erofs(base: Path) -> None:
    wrong = {}
    for name, attempt in _write_attempts(base).items():
        got = _errno(attempt)
        if got != errno.EROFS:
            wrong[name] = errno.errorcode.get(got, got) if got is not None else "succeeded"
    assert not wrong, f"under {base}: expected EROFS, got {wrong}"
    assert (base / "a.txt").read_bytes().startswith(b"version")


@pytest.mark.parametrize("ref", ["commit-id", "master^1", "master~1", "master^"])
def test_writes_under_a_commit_or_ref_fail_with_erofs(view, mounts, mnt, ref):
    from pfsfuse.api.types import Mkdir

    view.client.create_repo("r")
    c1 = view.put("r", "master", {"a.txt": b"version 1\n"})
    view.ops("r", "master", [Mkdir("emptyd")])
    c2 = view.put("r", "master", {"a.txt": b"version 2\n"})
    mounts()
    name = c2 if ref == "commit-id" else ref
    _assert_all_erofs(mnt / "r" / name)
    assert view.head("r", "master").id == c2, "no commit was started"
    assert c1 != c2


def test_read_only_mount_refuses_every_write(view, mounts, mnt):
    from pfsfuse.api.types import Mkdir

    view.client.create_repo("r")
    view.put("r", "master", {"a.txt": b"version 1\n"})
    head = view.ops("r", "master", [Mkdir("emptyd")])
    mounts("--read-only")
    assert stat.S_IMODE(os.stat(mnt).st_mode) == stat.S_IMODE(os.stat(mnt / "r").st_mode) == 0o555
    assert _errno(os.mkdir, mnt / "new-repo") == _errno(os.mkdir, mnt / "r" / "new-branch") == errno.EROFS
    _assert_all_erofs(mnt / "r" / "master")
    _assert_all_erofs(mnt / "r" / head)
    assert view.head("r", "master").id == head
    assert stat.S_ISDIR(os.stat(mnt / "r" / "master" / "emptyd").st_mode)
