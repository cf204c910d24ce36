"""Reading through the mount with real tools: cp -r, tar, rsync, find, du, diff -r, os.walk,
seeks, sqlite3 on a database stored in a commit, and many readers at once."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from mountkit import MiB, sh, tree_files

from helpers import PFS, fuse_unavailable

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


@pytest.fixture
def seeded(daemon, view, src_tree) -> str:
    """src_tree put with `pfs put-file -r` at r/master:tree (executable bit set explicitly);
    returns the commit id."""
    view.client.create_repo("r")
    daemon.pfs("put-file", "r", "master", "tree", "-r", "-f", str(src_tree))
    view.chmod("r", "master", "tree/run.sh", True)
    return view.head("r", "master").id


def test_cp_r_tar_rsync_out_and_diff(seeded, src_tree, mounts, mnt, tmp_home):
    mounts()
    for ref in ("master", seeded):
        sh("diff", "-r", str(src_tree), str(mnt / "r" / ref / "tree"))
    out = tmp_home / "out-cp"
    sh("cp", "-r", str(mnt / "r" / "master" / "tree"), str(out))
    sh("diff", "-r", str(src_tree), str(out))
    assert os.stat(out / "run.sh").st_mode & 0o100, "cp keeps the executable bit"
    sh("sh", str(out / "run.sh"))

    tar_out = tmp_home / "out-tar"
    tar_out.mkdir()
    sh("sh", "-c", f'tar c -C "{mnt}/r/{seeded}/tree" . | tar x -C "{tar_out}"')
    sh("diff", "-r", str(src_tree), str(tar_out))

    rsync_out = tmp_home / "out-rsync"
    sh("rsync", "-a", f"{mnt}/r/{seeded}/tree/", f"{rsync_out}/")
    sh("diff", "-r", str(src_tree), str(rsync_out))
    assert os.access(rsync_out / "run.sh", os.X_OK)


def test_find_du_and_os_walk(seeded, src_tree, mounts, mnt):
    mounts()
    root = mnt / "r" / seeded / "tree"

    def listing(base: Path) -> tuple[list[str], list[str]]:
        files = sh("find", str(base), "-type", "f", "-printf", r"%P %s\n").stdout.decode().splitlines()
        dirs = sh("find", str(base), "-type", "d", "-printf", r"%P\n").stdout.decode().splitlines()
        return sorted(files), sorted(dirs)

    assert listing(root) == listing(src_tree)
    total = sum(len(b) for b in tree_files(src_tree).values())
    du = int(sh("du", "-sb", str(root)).stdout.split()[0])
    assert du >= total, f"du -b {du} < {total} bytes of files"
    du_file = int(sh("du", "-b", str(root / "big" / "multi-chunk.bin")).stdout.split()[0])
    assert du_file == (src_tree / "big" / "multi-chunk.bin").stat().st_size
    sh("du", "-sh", str(mnt))  # the whole mount, every repo and branch level

    def walk(base: Path):
        return sorted((os.path.relpath(d, base), sorted(dirs), sorted(files)) for d, dirs, files in os.walk(base))

    assert walk(root) == walk(src_tree)
    assert tree_files(root) == tree_files(src_tree)


def test_seeks_and_partial_reads(daemon, view, mounts, mnt, tmp_home):
    rng = random.Random(3)
    data = rng.randbytes(9 * MiB + 12345)  # several chunks, an odd size
    view.client.create_repo("r")
    src = tmp_home / "data.bin"
    src.write_bytes(data)
    cid = view.put_local("r", "master", "data.bin", src)
    mounts()
    for path in (mnt / "r" / "master" / "data.bin", mnt / "r" / cid / "data.bin"):
        assert os.stat(path).st_size == len(data)
        with open(path, "rb", buffering=0) as f:
            for _ in range(200):
                off = rng.randrange(0, len(data))
                n = rng.choice([1, 17, 4096, 65536, 1_500_000])
                f.seek(off)
                assert f.read(n) == data[off : off + n], f"read of {n} at {off}"
            f.seek(len(data) - 10)
            assert f.read(100) == data[-10:]
            assert f.read(100) == b"", "reads at EOF return nothing"
            f.seek(len(data) + 1000)
            assert f.read(10) == b""
            f.seek(-5, os.SEEK_END)
            assert f.read() == data[-5:]
        fd = os.open(path, os.O_RDONLY)
        try:
            for off in (0, MiB - 1, 5 * MiB + 3, len(data) - 1):
                assert os.pread(fd, 3 * MiB, off) == data[off : off + 3 * MiB]
        finally:
            os.close(fd)
        # A sequential read end to end, in odd-sized pieces.
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(333_333):
                h.update(piece)
        assert h.digest() == hashlib.sha256(data).digest()


def _make_db(path: Path, rows: int = 20_000) -> None:
    rng = random.Random(11)
    db = sqlite3.connect(path)
    db.execute("pragma page_size = 4096")
    db.execute("create table t (id integer primary key, name text, value real, blob blob)")
    db.executemany(
        "insert into t values (?, ?, ?, ?)",
        ((i, f"name-{i}", i * 0.5, rng.randbytes(rng.randrange(0, 300))) for i in range(rows)),
    )
    db.execute("create index t_name on t(name)")
    db.commit()
    db.close()


def test_sqlite_reads_a_database_from_a_commit(daemon, view, mounts, mnt, tmp_home):
    src = tmp_home / "db.sqlite"
    _make_db(src)
    view.client.create_repo("r")
    cid = view.put_local("r", "master", "data/db.sqlite", src)
    mounts()
    path = mnt / "r" / cid / "data" / "db.sqlite"
    ref = sqlite3.connect(src)
    rng = random.Random(5)
    # Python's sqlite3, read-only and immutable, random access by key and by index.
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        for _ in range(300):
            i = rng.randrange(0, 20_000)
            q = "select id, name, value, blob from t where id = ?"
            assert db.execute(q, (i,)).fetchone() == ref.execute(q, (i,)).fetchone()
            q = "select id from t where name = ?"
            assert db.execute(q, (f"name-{i}",)).fetchone() == (i,)
        assert (
            db.execute("select count(*), sum(value) from t").fetchone()
            == ref.execute("select count(*), sum(value) from t").fetchone()
        )
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
        ref.close()
    # The sqlite3 command-line tool, on the same file through the branch and a ref.
    for p in (path, mnt / "r" / "master" / "data" / "db.sqlite"):
        r = sh(
            "sqlite3",
            "-readonly",
            f"file:{p}?mode=ro&immutable=1",
            "select name from t where id = 12345; select count(*) from t where id % 1000 = 7;",
        )
        assert r.stdout.decode().split() == ["name-12345", "20"]
    # A plain read-only open too (no immutable flag): sqlite looks for a journal and finds none.
    r = sh("sqlite3", "-readonly", str(path), "select value from t where id = 4000;")
    assert r.stdout.decode().strip() == "2000.0"


def test_concurrent_readers(daemon, view, mounts, mnt, tmp_home):
    rng = random.Random(9)
    files = {f"f{i}.bin": rng.randbytes(size) for i, size in enumerate([6 * MiB, 4 * MiB + 1, 700_000, 3000])}
    view.client.create_repo("r")
    cid = view.put("r", "master", files)
    mounts()
    errors: list[str] = []

    def reader(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(40):
                name = r.choice(list(files))
                base = mnt / "r" / r.choice(["master", cid])
                data = files[name]
                with open(base / name, "rb") as f:
                    off = r.randrange(0, len(data))
                    n = r.choice([4096, 200_000, 2 * MiB])
                    f.seek(off)
                    if f.read(n) != data[off : off + n]:
                        errors.append(f"reader {seed}: {name} at {off}+{n}")
        except Exception as e:  # reported below: an exception in a thread fails nothing by itself
            errors.append(f"reader {seed}: {e!r}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    # Processes too: several `sha256sum`s of the same and of different files at once.
    procs = [
        (name, subprocess.Popen(["sha256sum", str(mnt / "r" / ref / name)], stdout=subprocess.PIPE))
        for name in ("f0.bin", "f0.bin", "f1.bin", "f2.bin")
        for ref in ("master", cid)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a reader hung"
    for name, p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        assert out.split()[0].decode() == hashlib.sha256(files[name]).hexdigest(), name
    assert errors == []


def test_clients_that_wait_for_each_answer_and_concurrent_readers_are_all_answered(daemon, view, mounts, mnt):
    """Clients sending one small request at a time (stats, 4 KiB writes) are served by the request
    loop's poll, while readers keep several workers busy: every one is answered, correctly."""
    rng = random.Random(11)
    big = {f"big{i}.bin": rng.randbytes(5 * MiB) for i in range(2)}
    small = {f"s/{i:03d}": rng.randbytes(i) for i in range(300)}
    view.client.create_repo("r")
    view.put("r", "master", big | small)
    mounts()
    base = mnt / "r" / "master"
    errors: list[str] = []

    def guarded(fn):
        def run(*args):
            try:
                fn(*args)
            except Exception as e:  # reported below
                errors.append(f"{fn.__name__}{args}: {e!r}")

        return run

    @guarded
    def stats(seed: int) -> None:
        names = list(small)
        random.Random(seed).shuffle(names)
        for _ in range(3):
            for name in names:
                if os.lstat(base / name).st_size != len(small[name]):
                    errors.append(f"stats {seed}: size of {name}")

    @guarded
    def writes(name: str) -> None:
        fd = os.open(base / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for i in range(2000):
                os.pwrite(fd, i.to_bytes(4, "big") * 1024, (i % 64) * 4096)
        finally:
            os.close(fd)

    @guarded
    def reads(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(30):
            name = r.choice(list(big))
            off = r.randrange(0, 5 * MiB)
            with open(base / name, "rb") as f:
                f.seek(off)
                if f.read(MiB) != big[name][off : off + MiB]:
                    errors.append(f"reads {seed}: {name} at {off}")

    threads = [threading.Thread(target=stats, args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=writes, args=(f"w{i}.bin",)) for i in range(2)]
    threads += [threading.Thread(target=reads, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a client hung"
    assert errors == []
    expected = bytearray(64 * 4096)
    for i in range(2000):
        expected[(i % 64) * 4096 : (i % 64 + 1) * 4096] = i.to_bytes(4, "big") * 1024
    for i in range(2):
        assert (base / f"w{i}.bin").read_bytes() == expected


def test_symlinks_in_the_store_read_back_with_readlink(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    view.put("r", "master", {"dir/file.txt": b"target\n"})
    view.symlink("r", "master", "abs", "/etc/hostname")
    view.symlink("r", "master", "rel", "dir/file.txt")
    view.symlink("r", "master", "dangling", "../nowhere")
    mounts()
    base = mnt / "r" / "master"
    assert os.readlink(base / "abs") == "/etc/hostname"
    assert os.readlink(base / "rel") == "dir/file.txt"
    assert (base / "rel").read_bytes() == b"target\n", "a relative link resolves inside the mount"
    assert os.readlink(base / "dangling") == "../nowhere"
    assert sh("readlink", str(base / "abs")).stdout.decode().strip() == "/etc/hostname"


def test_cat_and_get_file_agree(daemon, view, mounts, mnt):
    view.client.create_repo("r")
    data = os.urandom(2 * MiB + 7)
    view.put("r", "master", {"x.bin": data})
    mounts()
    cat = subprocess.run(["cat", str(mnt / "r" / "master" / "x.bin")], capture_output=True, timeout=60)
    get = subprocess.run([PFS, "get-file", "r", "master", "x.bin"], env=daemon.env, capture_output=True, timeout=60)
    assert cat.stdout == get.stdout == data


def test_a_file_that_repeats_its_chunks_reads_back(daemon, view, mounts, mnt):
    # Zeros cut into identical chunks, and a block written twice repeats its chunks: read-ahead
    # must fetch each once and still serve every place it occurs.
    block = os.urandom(6 * MiB)
    data = bytes(20 * MiB) + block + block + bytes(5 * MiB)
    view.client.create_repo("r")
    view.put("r", "master", {"rep.bin": data})
    chunks = view.client.read_plan("r", "master", "rep.bin").chunks
    assert len({ref.hash for ref, _ in chunks}) < len(chunks)
    mounts()
    path = mnt / "r" / "master" / "rep.bin"
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    with open(path, "rb", buffering=0) as f:  # and sequentially in small pieces, from a fresh open
        h = hashlib.sha256()
        while piece := f.read(200_000):
            h.update(piece)
    assert h.digest() == hashlib.sha256(data).digest()
