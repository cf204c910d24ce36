"""The file engine in-process: repo, branch, commit and file semantics of Pachyderm 1.7."""

from __future__ import annotations

import io
import os

import msgspec
import pytest

from pfsfuse.api.types import Chmod, Copy, Dated, Delete, Mkdir, Mknod, Put, SetStat, Symlink
from pfsfuse.home import Home
from pfsfuse.metadata import tree
from pfsfuse.metadata.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from pfsfuse.metadata.records import BranchRef, FileNode, Stat, node_type
from pfsfuse.store import Store


def put(store, repo, ref, files: dict[str, bytes], append=False):
    return store.write_files(repo, ref, [Put(p, stream=io.BytesIO(d), append=append) for p, d in files.items()])


def read(store, repo, ref, path) -> bytes:
    return b"".join(store.get_file(repo, ref, path))


def test_put_file_on_a_branch_makes_one_finished_commit_per_call(store):
    store.create_repo("images")
    r1 = put(store, "images", "master", {"a.txt": b"one"})
    r2 = put(store, "images", "master", {"b.txt": b"two", "c/d.txt": b"three"})
    commits = store.list_commit("images")
    assert [c.id for c in commits] == [r2.commit, r1.commit]
    assert all(c.finished is not None for c in commits)
    assert commits[0].parent == r1.commit and commits[1].parent is None
    assert store.inspect_commit("images", r1.commit).children == [r2.commit]
    assert read(store, "images", "master", "c/d.txt") == b"three"
    assert read(store, "images", "master^", "a.txt") == b"one"
    with pytest.raises(NotFound):
        read(store, "images", "master^", "b.txt")
    assert store.inspect_repo("images").size == 11
    assert [f.path for f in store.list_file("images", "master")] == ["a.txt", "b.txt", "c"]


def test_open_commit_takes_several_writes_then_finishes(store):
    store.create_repo("data")
    c = store.start_commit("data", "master", description="batch")
    put(store, "data", "master", {"x": b"1"})
    put(store, "data", c.id, {"y": b"2"})
    assert store.inspect_commit("data", "master").finished is None
    assert read(store, "data", c.id, "x") == b"1"
    done = store.finish_commit("data", "master")
    assert done.id == c.id and done.finished is not None and done.description == "batch"
    assert len(store.list_commit("data")) == 1
    with pytest.raises(FailedPrecondition, match="already finished"):
        store.finish_commit("data", c.id)
    with pytest.raises(FailedPrecondition, match="finished"):
        put(store, "data", c.id, {"z": b"3"})
    with pytest.raises(FailedPrecondition, match="open commit"):
        store.start_commit("data", "master")
        store.start_commit("data", "master")


def test_overwrite_is_the_default_and_append_appends(store):
    store.create_repo("r")
    put(store, "r", "master", {"f": b"hello "})
    put(store, "r", "master", {"f": b"world"})
    assert read(store, "r", "master", "f") == b"world"
    put(store, "r", "master", {"f": b"!"}, append=True)
    assert read(store, "r", "master", "f") == b"world!"


def test_refs_walk_the_history(store):
    store.create_repo("r")
    ids = [put(store, "r", "master", {"v": str(i).encode()}).commit for i in range(5)]
    assert store.inspect_commit("r", "master").id == ids[4]
    assert store.inspect_commit("r", "master^").id == ids[3]
    assert store.inspect_commit("r", "master^3").id == ids[1]
    assert store.inspect_commit("r", "master~2").id == ids[2]
    assert store.inspect_commit("r", "master^^").id == ids[2]
    assert store.inspect_commit("r", "master~2^").id == ids[1]
    assert store.inspect_commit("r", f"{ids[2]}^").id == ids[1]
    with pytest.raises(NotFound, match="history"):
        store.inspect_commit("r", "master~5")
    with pytest.raises(InvalidArgument):
        store.inspect_commit("r", "master^x")
    assert [c.id for c in store.list_commit("r", "master~1", number=2)] == [ids[3], ids[2]]
    assert [c.id for c in store.list_commit("r", "master", since=ids[2])] == [ids[4], ids[3]]


def test_delete_commit_reparents_children_and_moves_heads(store):
    store.create_repo("r")
    a, b, c = (put(store, "r", "master", {f"f{i}": b"x"}).commit for i in range(3))
    store.delete_commit("r", b)
    assert store.inspect_commit("r", c).parent == a
    assert store.inspect_commit("r", a).children == [c]
    store.delete_commit("r", "master")
    assert store.inspect_branch("r", "master").head == a
    store.delete_commit("r", a)
    assert store.inspect_branch("r", "master").head is None
    assert store.list_commit("r") == []


def test_delete_commit_deletes_downstream_commits(store):
    store.create_repo("in")
    store.create_repo("out")
    src = put(store, "in", "master", {"x": b"1"}).commit
    from pfsfuse.metadata.records import CommitRef

    derived = store.start_commit("out", "master", provenance=[CommitRef("in", src)])
    store.finish_commit("out", derived.id)
    store.delete_commit("in", src)
    with pytest.raises(NotFound):
        store.inspect_commit("out", derived.id)


def test_branches_and_deferred_processing(store):
    store.create_repo("data")
    ids = [put(store, "data", "staging", {f"f{i}": b"x"}).commit for i in range(3)]
    store.create_branch("data", "master")
    assert store.inspect_branch("data", "master").head is None
    store.create_branch("data", "master", head="staging^1")
    assert store.inspect_branch("data", "master").head == ids[1]
    store.create_branch("data", "master", head="staging")
    assert store.inspect_branch("data", "master").head == ids[2]
    assert [b.name for b in store.list_branch("data")] == ["master", "staging"]
    # copy-file moves references from staging into a new commit on master
    store.start_commit("data", "master")
    store.write_files("data", "master", [Copy("g0", "data", "staging", "f0")])
    store.finish_commit("data", "master")
    assert read(store, "data", "master", "g0") == b"x"
    store.delete_branch("data", "staging")
    assert [b.name for b in store.list_branch("data")] == ["master"]
    with pytest.raises(NotFound):
        store.create_branch("data", "x", head="staging")


def test_branch_provenance_blocks_deletes_without_force(store):
    store.create_repo("in")
    store.create_repo("out")
    store.create_branch("out", "master", provenance=[BranchRef("in", "master")])
    with pytest.raises(FailedPrecondition, match="provenance"):
        store.delete_repo("in")
    with pytest.raises(FailedPrecondition, match="provenance"):
        store.delete_branch("in", "master")
    with pytest.raises(InvalidArgument, match="itself"):
        store.create_branch("in", "master", provenance=[BranchRef("out", "master")])
    store.delete_repo("in", force=True)
    assert store.inspect_branch("out", "master").provenance == []


def test_repos(store):
    store.create_repo("a", "first")
    with pytest.raises(AlreadyExists):
        store.create_repo("a")
    store.create_repo("a", "changed", update=True)
    assert store.inspect_repo("a").description == "changed"
    for bad in ["", "a/b", "..", "x" * 64, "sp ace"]:
        with pytest.raises(InvalidArgument):
            store.create_repo(bad)
    store.delete_repo("a")
    with pytest.raises(NotFound):
        store.inspect_repo("a")
    with pytest.raises(NotFound):
        put(store, "a", "master", {"x": b""})


@pytest.mark.parametrize("bad", ["../x", "a/../b", "a//b", "./a", "a\0b", "x/" + "y" * 300])
def test_bad_paths_are_rejected_and_change_nothing(store, bad):
    store.create_repo("r")
    put(store, "r", "master", {"ok": b"1"})
    with pytest.raises(InvalidArgument):
        put(store, "r", "master", {"fine": b"2", bad: b"3"})
    assert len(store.list_commit("r")) == 1
    assert [f.path for f in store.list_file("r", "master")] == ["ok"]


def test_file_and_directory_conflicts(store):
    store.create_repo("r")
    put(store, "r", "master", {"d/f": b"1"})
    with pytest.raises(FailedPrecondition, match="directory"):
        put(store, "r", "master", {"d": b"2"})
    with pytest.raises(FailedPrecondition, match="not a directory|is a file"):
        put(store, "r", "master", {"d/f/g": b"2"})
    assert len(store.list_commit("r")) == 1


def test_delete_file_and_glob_and_diff(store):
    store.create_repo("r")
    put(store, "r", "master", {"a/1.csv": b"1", "a/2.csv": b"22", "b/3.txt": b"333", "top": b"t"})
    put(store, "r", "master", {"a/2.csv": b"changed", "a/4.csv": b"4"})
    assert [f.path for f in store.glob_file("r", "master", "/a/*.csv")] == ["a/1.csv", "a/2.csv", "a/4.csv"]
    assert [f.path for f in store.glob_file("r", "master", "/*")] == ["a", "b", "top"]
    d = store.diff_file("r", "master")
    assert [f.path for f in d.new] == ["a/2.csv", "a/4.csv"]
    assert [f.path for f in d.old] == ["a/2.csv"]
    store.write_files("r", "master", [Delete("a")])
    assert [f.path for f in store.list_file("r", "master")] == ["b", "top"]
    with pytest.raises(NotFound):
        store.write_files("r", "master", [Delete("nope")])
    assert [f.path for f in store.walk_file("r", "master")] == ["", "b", "b/3.txt", "top"]


def test_large_file_ranges_and_dedup(store, tmp_path):
    store.create_repo("big")
    data = os.urandom(9 << 20)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    first = store.write_files("big", "master", [Put("big.bin", local=str(src))])
    assert first.stored > 0
    again = store.write_files("big", "master", [Put("copy.bin", local=str(src))])
    assert again.stored == 0  # every chunk was already stored
    assert read(store, "big", "master", "copy.bin") == data
    assert b"".join(store.get_file("big", "master", "big.bin", 5 << 20, 1000)) == data[5 << 20 : (5 << 20) + 1000]
    plan = store.read_plan("big", "master", "big.bin")
    assert sum(r.size for r, _ in plan.chunks) == len(data) and len(plan.chunks) > 2
    # A 1 KiB edit in the middle stores at most two new chunks.
    edited = bytearray(data)
    edited[4 << 20 : (4 << 20) + 1024] = os.urandom(1024)
    r = store.write_files("big", "master", [Put("big.bin", stream=io.BytesIO(edited))])
    assert 0 < r.stored <= 2 * (4 << 20)
    new_refs = {c.hash for c, _ in store.read_plan("big", "master", "big.bin").chunks}
    old_refs = {c.hash for c, _ in plan.chunks}
    assert len(new_refs - old_refs) <= 2


def test_subscribe_commit_yields_finished_commits_in_order(store):
    import threading

    store.create_repo("r")
    first = put(store, "r", "master", {"a": b"1"}).commit
    cancel = threading.Event()
    it = store.subscribe("r", "master", None, False, cancel)
    assert next(it).id == first
    second = put(store, "r", "master", {"b": b"2"}).commit
    assert next(it).id == second
    cancel.set()
    assert next(it, None) is None


def test_close_releases_the_store_for_the_next_owner(tmp_path):
    home = Home(tmp_path / "home")
    first = Store(home)
    first.create_repo("r")
    put(first, "r", "master", {"f": b"kept"})
    first.close()
    second = Store(home)
    try:
        assert read(second, "r", "master", "f") == b"kept"
    finally:
        second.close()


def test_write_ops_apply_in_order_as_one_commit(store):
    store.create_repo("r")
    put(store, "r", "master", {"a/x": b"1", "a/y": b"2"})
    r = store.write_files(
        "r",
        "master",
        [
            Put("b/new", stream=io.BytesIO(b"3"), executable=True),
            Copy("c", "r", "master", "a"),  # sees the branch as it was before this write
            Copy("d", "r", "master", "b/new"),  # ...plus the ops before it in this batch
            Delete("a/x"),
            Mkdir("empty"),
            Mkdir("a"),  # already a directory: nothing to do
            Symlink("link", "../elsewhere"),
            Chmod("a/y", True),
            Delete("b"),
        ],
    )
    assert r.files == 1 and len(store.list_commit("r")) == 2
    listing = {f.path: f for f in store.walk_file("r", "master")}
    assert set(listing) == {"", "a", "a/y", "c", "c/x", "c/y", "d", "empty", "link"}
    assert listing["a/y"].executable and listing["d"].executable
    assert listing["link"].type == "symlink" and listing["link"].target == "../elsewhere"
    assert listing["empty"].type == "dir" and listing["empty"].children == 0
    assert read(store, "r", "master", "c/x") == b"1"
    # nothing of a failed batch lands
    with pytest.raises(NotFound):
        store.write_files("r", "master", [Delete("c"), Delete("nope")])
    assert store.inspect_file("r", "master", "c").type == "dir"
    with pytest.raises(AlreadyExists):
        store.write_files("r", "master", [Mkdir("d")])
    with pytest.raises(AlreadyExists):
        store.write_files("r", "master", [Copy("d", "r", "master", "a/y", overwrite=False)])


def test_an_op_on_a_directory_sees_what_earlier_ops_of_the_batch_put_in_it(store):
    from pfsfuse.api.types import Mkdir

    store.create_repo("r")
    put(store, "r", "master", {"src": b"kept"})
    header = Put("d", stream=io.BytesIO(b"h\n"), frame="header")
    store.write_files("r", "master", [Mkdir("d"), Copy("d/f", "r", "master", "src"), header])
    assert read(store, "r", "master", "d/f") == b"h\nkept"  # the header reads before each file
    # and a node written early in the batch is not taken as current once its parent is deleted
    r = store.write_files("r", "master", [Put("e/x", stream=io.BytesIO(b"1")), Delete("e"), Mkdir("e/x")])
    assert r is not None and store.inspect_file("r", "master", "e/x").type == "dir"


def test_dir_names_are_dir_entries_without_the_nodes(store):
    store.create_repo("r")
    put(store, "r", "master", {f"d/f{i:05d}": b"%d" % i for i in range(5000)})  # leaves past a read's batch
    big = os.urandom(3 << 20)  # several chunks
    store.write_files(
        "r",
        "master",
        [
            Put("d/big", stream=io.BytesIO(big)),
            Put("d/empty", stream=io.BytesIO(b"")),
            Symlink("d/sym", "f00001"),
            Mkdir("d/sub"),
            Mknod("d/fifo", "fifo"),
            Copy("d/linked", "r", "master", "d/f00002", link=True),
        ],
    )
    root = store.dir_child(store.inspect_commit("r", "master").tree.root, "d").root
    entries = store.dir_entries(root)
    names = [n for n, _ in entries]
    for after in [None, "", names[0], names[30], names[31], names[2500] + "\0", "big", names[-2], names[-1], "~"]:
        for limit in (1, 31, 1000, 100_000):
            got = store.dir_names(root, after, limit)
            want = store.dir_entries(root, after, limit)
            assert got.names == [n for n, _ in want]
            assert got.types == [node_type(e) for _, e in want]
            assert got.links == [(e.stat.link or 0) if e.stat is not None else 0 for _, e in want]
            ones = [
                e.chunks[0] if isinstance(e, FileNode) and e.chunks and len(e.chunks) == 1 else None for _, e in want
            ]
            assert got.chunks == [c.hash if c else b"" for c in ones]
            assert got.sizes == [c.size if c else 0 for c in ones]
    kinds = dict(zip(store.dir_names(root).names, store.dir_names(root).types, strict=True))
    assert (kinds["sym"], kinds["sub"], kinds["fifo"], kinds["big"]) == (0o120000, 0o040000, 0o010000, 0o100000)
    every = store.dir_names(root)
    linked = every.links[every.names.index("linked")]
    assert linked and every.links[every.names.index("f00002")] == linked
    assert every.chunks[every.names.index("big")] == b"" and every.chunks[every.names.index("empty")] == b""


def test_objects_by_hash(store):
    store.create_repo("r")
    put(store, "r", "master", {f"d/f{i:03d}": b"%d" % i for i in range(300)})
    d = store.inspect_commit("r", "master").tree
    top = store.dir_entries(d.root)
    assert [n for n, _ in top] == ["d"]
    root = top[0][1].root
    names = [n for n, _ in store.dir_entries(root)]
    assert names == [f"f{i:03d}" for i in range(300)]
    assert [n for n, _ in store.dir_entries(root, "f100", 2)] == ["f101", "f102"]
    node = store.dir_child(root, "f007")
    assert store.dir_child(root, "nope") is None
    assert store.read_chunk(node.chunks[0]) == b"7"
    [loc] = store.chunk_locations([node.chunks[0].hash])
    assert loc.length == 1


def test_a_header_after_a_copy_into_a_new_directory_keeps_the_copy(store):
    # Mkdir d, Copy d/f, then a header on d in one batch: the header op must see d/f.
    store.create_repo("r")
    put(store, "r", "master", {"src": b"data"})
    store.write_files(
        "r",
        "master",
        [Mkdir("d"), Copy("d/f", "r", "master", "src"), Put("d", stream=io.BytesIO(b"head\n"), frame="header")],
    )
    assert read(store, "r", "master", "d/f") == b"head\ndata"
    assert [f.path for f in store.list_file("r", "master", "d")] == ["d/f"]


def test_stat_is_kept_apart_from_content_identity(store):
    store.create_repo("r")
    st = Stat(0o4750, 1234, 99, 1_000_000_123, 2_000_000_456)
    store.write_files(
        "r",
        "master",
        [
            Put("f", stream=io.BytesIO(b"x"), stat=st),
            Put("plain", stream=io.BytesIO(b"x")),
            Mkdir("d", Stat(0o1777, 5, 6, 7, 8)),
            Symlink("l", "f", Stat(0o777, 1, 2, 3, 4)),
        ],
    )
    f = store.inspect_file("r", "master", "f")
    plain = store.inspect_file("r", "master", "plain")
    assert (f.mode, f.uid, f.gid, f.mtime, f.ctime) == (0o4750, 1234, 99, 1_000_000_123, 2_000_000_456)
    assert f.executable and f.hash == plain.hash  # same content, same identity
    assert plain.mode is None  # stored without a stat: shown with defaults
    assert store.inspect_file("r", "master", "d").mode == 0o1777
    assert store.inspect_file("r", "master", "l").uid == 1
    # a stat change leaves the content hash alone
    store.write_files("r", "master", [SetStat("f", Stat(0o600, 1, 1, 5, 6)), SetStat("d", Stat(0o700, 0, 0, 1, 1))])
    f2 = store.inspect_file("r", "master", "f")
    assert (f2.mode, f2.hash, f2.executable) == (0o600, f.hash, False)
    assert store.inspect_file("r", "master", "d").mode == 0o700
    # new content without a stat keeps the mode and owner, with the mtime made now
    store.write_files("r", "master", [Put("f", stream=io.BytesIO(b"new"))])
    f3 = store.inspect_file("r", "master", "f")
    assert (f3.mode, f3.uid) == (0o600, 1) and f3.mtime > 5
    # a chmod +x of a file with a stat keeps its other bits
    store.write_files("r", "master", [Chmod("f", True)])
    assert store.inspect_file("r", "master", "f").mode == 0o700
    with pytest.raises(NotFound):
        store.write_files("r", "master", [SetStat("nope", st)])
    with pytest.raises(InvalidArgument):
        store.write_files("r", "master", [SetStat("f", Stat(0o17777, 0, 0, 0, 0))])


def test_a_directory_mtime_moves_when_its_entries_change_unless_set_after(store):
    store.create_repo("r")
    old = Stat(0o755, 0, 0, 10**9, 10**9)
    store.write_files("r", "master", [Mkdir("d", old), Mkdir("kept", old)])
    assert store.inspect_file("r", "master", "d").mtime == 10**9
    store.write_files(
        "r",
        "master",
        [Put("d/new", stream=io.BytesIO(b"x")), Put("kept/new", stream=io.BytesIO(b"x")), SetStat("kept", old)],
    )
    assert store.inspect_file("r", "master", "d").mtime > 10**9  # an entry came: now
    assert store.inspect_file("r", "master", "kept").mtime == 10**9  # given after it (tar's utime)
    store.write_files("r", "master", [SetStat("d", old), Put("d/new", stream=io.BytesIO(b"y"))])
    assert store.inspect_file("r", "master", "d").mtime == 10**9  # new content, no new entry
    store.write_files("r", "master", [Delete("d/new")])
    assert store.inspect_file("r", "master", "d").mtime > 10**9


def test_a_dated_directory_takes_the_writers_time_for_its_entries_change(store):
    store.create_repo("r")
    old = Stat(0o755, 0, 0, 10**9, 10**9)
    store.write_files("r", "master", [Mkdir("d", old), Mkdir("e", old)])
    shown = 2 * 10**9 + 123
    store.write_files("r", "master", [Put("d/new", stream=io.BytesIO(b"x")), Dated("d", shown), Dated("e", shown)])
    d, e = store.inspect_file("r", "master", "d"), store.inspect_file("r", "master", "e")
    assert (d.mtime, d.ctime) == (shown, shown)
    assert (e.mtime, e.ctime) == (10**9, 10**9)  # its entries did not change: the time is not used
    with pytest.raises(InvalidArgument):
        store.write_files("r", "master", [Delete("d/new"), Dated("d", -1)])
    assert store.inspect_file("r", "master", "d/new").size == 1  # (the refused batch changed nothing)


def test_diff_file_reports_content_not_stats(store):
    store.create_repo("r")
    put(store, "r", "master", {"d/f": b"x", "g": b"y"})
    store.write_files("r", "master", [SetStat("d/f", Stat(0o600, 1, 1, 1, 1)), SetStat("g", Stat(0o600, 1, 1, 1, 1))])
    for path in ("", "d", "g"):
        d = store.diff_file("r", "master", path, "r", "master^", path)
        assert (d.new, d.old) == ([], []), path
    put(store, "r", "master", {"d/f": b"changed"})
    assert [f.path for f in store.diff_file("r", "master", "", "r", "master^", "").new] == ["d/f"]


def test_fifos_sockets_and_devices_are_kept(store):
    store.create_repo("r")
    st = Stat(0o640, 1, 2, 3, 4)
    store.write_files(
        "r", "master", [Mknod("p", "fifo", stat=st), Mknod("s", "socket"), Mknod("d/tty", "char", os.makedev(4, 1))]
    )
    kinds = {f.path: (f.type, f.rdev, f.mode) for f in store.walk_file("r", "master") if f.type != "dir"}
    assert kinds == {"p": ("fifo", 0, 0o640), "s": ("socket", 0, None), "d/tty": ("char", os.makedev(4, 1), None)}
    with pytest.raises(InvalidArgument):
        read(store, "r", "master", "p")  # no content
    with pytest.raises(InvalidArgument):
        store.write_files("r", "master", [Mknod("q", "fifo", 5)])


def test_directories_count_their_subdirectories_and_fsck_checks_the_counts(store, tmp_path, monkeypatch):
    store.create_repo("r")
    store.write_files("r", "master", [Put("a/b/c", stream=io.BytesIO(b"x")), Mkdir("a/d"), Mkdir("e")])
    store.write_files("r", "master", [Delete("a/b"), Copy("e/a", "r", "master", "a")])
    root = store.inspect_commit("r", "master").tree
    assert (root.subdirs, root.nlink) == (2, 4)
    real = tree._update

    def miscounting(dst, d, changes):
        new = real(dst, d, changes)
        return new if new.root is None else msgspec.structs.replace(new, subdirs=new.subdirs + 1)

    miscounted = Store(Home(tmp_path / "miscounted"))
    try:
        miscounted.create_repo("r")
        monkeypatch.setattr(tree, "_update", miscounting)
        miscounted.write_files("r", "master", [Put("f/g", stream=io.BytesIO(b"y"))])
        problems = miscounted.fsck()
        assert problems and all("subdirectories" in p for p in problems), problems
    finally:
        miscounted.close()


def test_a_write_asked_for_listings_answers_those_of_the_small_directories_it_changed(store):
    from pfsfuse.engine.writes import LISTED_DIRS, SMALL_LISTING

    store.create_repo("r")
    put(store, "r", "master", {f"big/f{i:03}": b"x" for i in range(SMALL_LISTING + 1)} | {"a/b/old": b"o"})
    root = store.inspect_commit("r", "master").tree

    def listed(result) -> dict[bytes, list]:
        return dict(result.listings)

    def entries(path: str) -> tuple[bytes, list]:
        d = store.glob_nodes("r", "master", path)[0][1] if path else store.inspect_commit("r", "master").tree
        return d.root, store.dir_entries(d.root)

    result = store.write_files("r", "master", [Put("a/b/new", stream=io.BytesIO(b"n")), Delete("a/b/old")], True)
    # a/b, a and the root changed: each is small; big/ was not changed
    assert listed(result) == dict(entries(p) for p in ("a/b", "a", ""))
    assert result.tree.root != root.root and result.tree.root in listed(result)

    result = store.write_files("r", "master", [Put("big/f999", stream=io.BytesIO(b"y"))], True)
    assert set(listed(result)) == {entries("")[0]}  # big/ (now 66 entries) is left out

    assert store.write_files("r", "master", [Put("a/c", stream=io.BytesIO(b"c"))]).listings == []  # not asked
    many = [Put(f"d{i}/f", stream=io.BytesIO(b"")) for i in range(LISTED_DIRS)]
    assert store.write_files("r", "master", many, True).listings == []  # 8 directories and the root


def test_user_extended_attributes_are_kept_in_the_stat_and_checked(store):
    store.create_repo("r")
    put(store, "r", "master", {"f": b"content"})
    before = store.inspect_file("r", "master", "f").hash
    attrs = (("user.a", b""), ("user.origin", b"s3://b/f"))
    store.write_files("r", "master", [SetStat("f", Stat(0o644, 0, 0, 1, 1, xattrs=attrs))])
    info = store.inspect_file("r", "master", "f")
    assert info.xattrs == dict(attrs) and info.hash == before  # not part of the content
    store.write_files("r", "master", [Put("f", stream=io.BytesIO(b"new content"))])
    assert store.inspect_file("r", "master", "f").xattrs == dict(attrs)  # a write keeps them
    wrong = {
        "another namespace": (("trusted.x", b"1"),),
        "the mount's own": (("user.pfs.hash", b"1"),),
        "no name": (("user.", b"1"),),
        "out of order": (("user.b", b"1"), ("user.a", b"1")),
        "given twice": (("user.a", b"1"), ("user.a", b"2")),
        "a name too long": (("user." + "n" * 251, b"1"),),
        "a value too long": (("user.v", bytes(65537)),),
        "too much together": tuple((f"user.{i}", bytes(30000)) for i in range(3)),
    }
    for what, bad in wrong.items():
        with pytest.raises(InvalidArgument):
            store.write_files("r", "master", [SetStat("f", Stat(0o644, 0, 0, 1, 1, xattrs=bad))])
        assert store.inspect_file("r", "master", "f").xattrs == dict(attrs), what
