"""pfs extract and restore: a round trip gives the same repos, commits (ids included), branches and
files; bad dumps and non-empty stores are refused and leave nothing behind."""

from __future__ import annotations

import io
import os

import msgspec
import pytest

from pfsfuse.api.types import Copy, Delete, Mkdir, Mknod, Put, Symlink
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument
from pfsfuse.metadata.records import BranchRef, CommitRef, Stat
from pfsfuse.store import Store


def fill(store: Store) -> None:
    """Repos with history, provenance, a split file with a frame, an open commit, every node kind."""
    store.create_repo("images", "pictures")
    store.create_repo("edges")
    w = lambda repo, ref, *ops: store.write_files(repo, ref, list(ops))  # noqa: E731
    data = lambda n: io.BytesIO(os.urandom(n))  # noqa: E731
    w(
        "images",
        "master",
        Put("big.bin", stream=data(6 << 20)),
        Put("a/x.txt", stream=io.BytesIO(b"x"), stat=Stat(0o4750, 1, 2, 3, 4)),
    )
    w(
        "images",
        "master",
        Put("users", stream=io.BytesIO(b"1,a\n2,b\n"), split="line"),
        Mkdir("empty", Stat(0o1777, 5, 6, 7, 8)),
    )
    w(
        "images",
        "master",
        Put("users", stream=io.BytesIO(b"id,name\n"), frame="header"),
        Symlink("link", "a/x.txt"),
        Mknod("pipe", "fifo"),
    )
    w("images", "master", Delete("a"), Put("big.bin", stream=data(1000), append=True))
    store.create_branch("images", "v1", head="master^")
    up = store.inspect_commit("images", "master")
    store.create_branch("edges", "master", provenance=[BranchRef("images", "master")])
    out = store.start_commit("edges", "master", description="derived", provenance=[CommitRef("images", up.id)])
    w("edges", out.id, Copy("copied", "images", up.id, "users"), Put("e.png", stream=data(300)))
    store.finish_commit("edges", out.id)
    store.start_commit("edges", "master", description="still open")
    w("edges", "master", Put("wip", stream=io.BytesIO(b"half done")))


def snapshot(store: Store) -> dict:
    """Everything a user can see: commits, branches and every file of every commit."""
    out = {}
    for repo in store.list_repo():
        commits = store.list_commit(repo.name)
        out[repo.name] = {
            "repo": (repo.description, repo.size, repo.branches),
            "commits": [msgspec.structs.replace(c, tree=type(c.tree)(c.tree.size, c.tree.count)) for c in commits],
            "branches": store.list_branch(repo.name),
            "files": {
                (c.id, f.path, f.type, f.target, f.mode, f.uid, f.gid, f.mtime): b"".join(
                    store.get_file(repo.name, c.id, f.path)
                )
                if f.type == "file"
                else b""
                for c in commits
                for f in store.walk_file(repo.name, c.id)
            },
        }
    return out


@pytest.fixture
def source(tmp_path):
    s = Store(Home(tmp_path / "source"))
    fill(s)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def target(tmp_path):
    s = Store(Home(tmp_path / "target"))
    try:
        yield s
    finally:
        assert s.fsck() == []
        s.close()


def test_a_round_trip_restores_everything_with_the_same_ids(source, target):
    dump = b"".join(source.extract())
    result = target.restore(io.BytesIO(dump))
    assert (result.repos, result.commits, result.branches) == (2, 6, 3)
    assert snapshot(target) == snapshot(source)
    assert target.inspect_commit("edges", "master").finished is None
    assert target.inspect_commit("edges", "master^").provenance == source.inspect_commit("edges", "master^").provenance
    # The restored store works on: writes, and a second extract of it restores the same again.
    target.write_files("edges", "master", [Put("more", stream=io.BytesIO(b"more"))])
    target.finish_commit("edges", "master")


def test_a_store_with_the_same_seed_gets_identical_trees(source, target, tmp_path):
    dump = b"".join(source.extract())
    same = Home(tmp_path / "same-seed")
    same.ensure()
    same.config_file.write_bytes(source.home.config_file.read_bytes().replace(b"source", b"same-seed"))
    twin = Store(same)
    try:
        twin.restore(io.BytesIO(dump))
        for repo in ("images", "edges"):
            assert twin.list_commit(repo) == source.list_commit(repo)
        assert twin.fsck() == []
    finally:
        twin.close()


def test_a_dump_without_objects_restores_over_the_same_object_store(tmp_path):
    home = Home(tmp_path / "home")
    store = Store(home)
    fill(store)
    dump = b"".join(store.extract(objects=False))
    assert len(dump) < 100_000  # locations, not the megabytes of data
    expected = snapshot(store)
    store.close()
    os.rename(home.index, tmp_path / "lost-index")  # the index is lost; data and config stay
    store = Store(home)
    try:
        store.restore(io.BytesIO(dump))
        assert snapshot(store) == expected and store.fsck() == []
    finally:
        store.close()


def test_a_dump_without_objects_needs_the_store_it_came_from(source, target):
    with pytest.raises(FailedPrecondition, match="only the store it was extracted from"):
        target.restore(io.BytesIO(b"".join(source.extract(objects=False))))
    assert target.list_repo() == []


def test_bad_dumps_are_refused_and_leave_nothing_visible(source, target):
    dump = b"".join(source.extract())
    cases = [
        (dump[: len(dump) // 2], "ends early"),
        (dump[:-1], "ends early"),
        (dump[: dump.rindex(b"\xa3end")], "ends early|checksum"),
        (dump[:3000] + bytes([dump[3000] ^ 1]) + dump[3001:], "checksum mismatch"),
        (b"this is not a dump at all", "not a pfs dump"),
        (b"", "not a pfs dump"),
    ]
    for bad, error in cases:
        with pytest.raises(InvalidArgument, match=error):
            target.restore(io.BytesIO(bad))
        assert target.list_repo() == []
    # What the failed restores wrote is garbage, and the collector takes it.
    assert target.garbage_collect(orphan_age=0).pages > 0
    target.restore(io.BytesIO(dump))
    assert snapshot(target) == snapshot(source)


def test_restore_needs_an_empty_store(source, target):
    target.create_repo("mine")
    with pytest.raises(FailedPrecondition, match="needs an empty store"):
        target.restore(io.BytesIO(b"".join(source.extract())))
    assert [r.name for r in target.list_repo()] == ["mine"]


def test_extract_holds_off_collections_until_it_is_done(source):
    pieces = source.extract()
    with pytest.raises(FailedPrecondition, match="running"):
        source.garbage_collect()
    b"".join(pieces)
    source.garbage_collect()


def test_s3_etags_go_with_their_files(source, target):
    """An ETag an S3 client was given stays the same after a restore into a store whose content
    hashes differ (another seed), and stays with its repo."""
    source.create_repo("s3")
    etag = "0123456789abcdef0123456789abcdef"
    source.write_files("s3", "master", [Put("obj", stream=io.BytesIO(b"s3 bytes"), etag=etag)])
    target.restore(io.BytesIO(b"".join(source.extract())))
    node = target.glob_nodes("s3", "master", "obj")[0][1]
    assert target.etags("s3", [node.hash.hex()]) == [etag]
    other = next(r.name for r in target.list_repo() if r.name != "s3")
    assert target.etags(other, [node.hash.hex()]) == [""]  # (another repo vouches for nothing)
