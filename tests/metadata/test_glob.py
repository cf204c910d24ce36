"""Glob patterns over a real tree, and `match` agreeing with `glob`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfsfuse.metadata import tree
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.metadata.glob import glob, match
from pfsfuse.metadata.records import EMPTY_DIR, SymlinkNode

FILES = [
    "a/x",
    "a/b/x",
    "a/b/c/x",
    "a/y",
    "b/x",
    "bar",
    "dir/f1",
    "dir/f2",
    "dir/sub/g",
    "foo",
    "foo1",
    "foobar/z",
    ".hidden",
    "x",
]


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    db = DB(str(tmp_path_factory.mktemp("glob") / "db"), seed=12345)
    txn = db.txn()
    changes = {p: tree.make_file(txn, []) for p in FILES}
    changes["link"] = SymlinkNode("foo")
    changes["empty"] = EMPTY_DIR
    root = tree.apply(txn, EMPTY_DIR, changes)
    txn.commit()
    yield db, root
    db.close()


def paths(fs, pattern):
    db, root = fs
    return [p for p, _ in glob(db, root, pattern)]


def test_root(fs):
    db, root = fs
    assert list(glob(db, root, "/")) == [("", root)]
    assert list(glob(db, root, "")) == [("", root)]
    assert match("/", "") and match("", "")
    assert not match("/", "a") and not match("*", "") and not match("**", "")


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("/*", [".hidden", "a", "b", "bar", "dir", "empty", "foo", "foo1", "foobar", "link", "x"]),
        ("*", [".hidden", "a", "b", "bar", "dir", "empty", "foo", "foo1", "foobar", "link", "x"]),
        ("/*/*", ["a/b", "a/x", "a/y", "b/x", "dir/f1", "dir/f2", "dir/sub", "foobar/z"]),
        ("/dir/*", ["dir/f1", "dir/f2", "dir/sub"]),
        ("/dir/", ["dir"]),
        ("/foo*", ["foo", "foo1", "foobar"]),
        ("/foo?", ["foo1"]),
        ("[ab]*", ["a", "b", "bar"]),
        ("[!ab.]*", ["dir", "empty", "foo", "foo1", "foobar", "link", "x"]),
        ("/a/**/x", ["a/b/c/x", "a/b/x", "a/x"]),
        ("/a/**", ["a", "a/b", "a/b/c", "a/b/c/x", "a/b/x", "a/x", "a/y"]),
        ("**/x", ["a/b/c/x", "a/b/x", "a/x", "b/x", "x"]),
        ("/*/x", ["a/x", "b/x"]),
        ("/dir/sub/g", ["dir/sub/g"]),
        ("/dir/sub/g/h", []),
        ("/nope/*", []),
        ("/empty/*", []),
        ("/link/*", []),
    ],
)
def test_patterns(fs, pattern, expected):
    assert paths(fs, pattern) == expected
    assert [p for p in all_paths(fs) if match(pattern, p)] == expected


def all_paths(fs):
    db, root = fs
    return [p for p, _ in tree.walk(db, root)]


def test_double_star_yields_everything_once(fs):
    db, root = fs
    everything = list(tree.walk(db, root))
    assert list(glob(db, root, "**")) == everything
    assert list(glob(db, root, "/**/**")) == everything
    assert paths(fs, "**/*") == [p for p, _ in everything]


def test_literal_components_are_looked_up(fs, monkeypatch):
    def no_listing(*args, **kwargs):
        raise AssertionError("listed a directory")

    monkeypatch.setattr(tree, "list_dir", no_listing)
    assert paths(fs, "/dir/sub/g") == ["dir/sub/g"]
    assert paths(fs, "/a/b/missing") == []


@pytest.mark.parametrize("pattern", ["a//b", "/a/../b", "..", "./a", "a/./b"])
def test_invalid_patterns(fs, pattern):
    db, root = fs
    with pytest.raises(InvalidArgument):
        glob(db, root, pattern)
    with pytest.raises(InvalidArgument):
        match(pattern, "a")


components = st.sampled_from(["a", "b", "x", "*", "?", "**", "[ab]", "f*", "*o*"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(components, min_size=1, max_size=4), lead=st.booleans())
def test_glob_agrees_with_match(fs, parts, lead):
    pattern = ("/" if lead else "") + "/".join(parts)
    assert paths(fs, pattern) == [p for p in all_paths(fs) if match(pattern, p)]


class _CountingPages:
    """The index, counting the tree pages read."""

    def __init__(self, db):
        self.db, self.pages = db, 0

    def page(self, h):
        self.pages += 1
        return self.db.page(h)

    def blob(self, h):
        return self.db.blob(h)

    def hash(self, data):
        return self.db.hash(data)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """One directory of 20,000 entries (hundreds of pages)."""
    db = DB(str(tmp_path_factory.mktemp("flat") / "db"), seed=12345)
    txn = db.txn()
    names = [f"file{i:05}" for i in range(20_000)] + ["file1", "file12", "other", "fil", "file1z/x"]
    root = tree.apply(txn, EMPTY_DIR, {f"big/{n}": tree.make_file(txn, []) for n in names})
    txn.commit()
    yield db, root
    db.close()


@pytest.mark.parametrize(
    "pattern", ["big/file1234*", "big/file1*", "big/file12?", "big/fil*", "big/file1[23]9*", "big/o*", "big/zz*"]
)
def test_prefix_glob_seeks_and_equals_a_full_scan(flat, pattern):
    db, root = flat
    counted = _CountingPages(db)
    got = [p for p, _ in glob(counted, root, pattern)]
    assert got == [p for p, _ in tree.walk(db, root) if match(pattern, p)]
    if pattern in ("big/file1234*", "big/o*", "big/zz*"):
        assert got or pattern == "big/zz*"
        assert counted.pages < 12  # a few pages per level, not the directory's hundreds
