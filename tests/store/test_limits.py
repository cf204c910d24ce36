"""The store's limits on names, paths and symlink targets hold for every write, whichever way a
path is made (a copy or rename of a directory included), and fsck finds whatever restore would
refuse before a restore does."""

from __future__ import annotations

import io

import pytest

from pfsfuse.api.types import Copy, Mkdir, Put, Symlink
from pfsfuse.home import Home
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import InvalidArgument, NameTooLong
from pfsfuse.store import Store

NAME = "n" * 250  # a long component: sixteen of them and their slashes make 4016 bytes


def deep(levels: int) -> str:
    return "/".join([NAME] * levels)


def test_copying_a_directory_checks_every_path_below_it(store):
    store.create_repo("r")
    bottom = deep(16) + "/leaf.txt"  # 4024 bytes under d
    store.write_files("r", "master", [Put("d/" + bottom, stream=io.BytesIO(b"x"))])
    before = store.inspect_commit("r", "master")
    # Renamed to a longer name, its deepest file would pass 4096 bytes: refused, nothing written.
    with pytest.raises(NameTooLong, match="longer than 4096"):
        store.write_files(
            "r", "master", [Copy("e" * 250 + "/d", "r", "master", "d"), Put("other", stream=io.BytesIO(b"o"))]
        )
    assert store.inspect_commit("r", "master").tree == before.tree
    # To a name of the same length, or one that still fits, it is a reference as before.
    store.write_files("r", "master", [Copy("e", "r", "master", "d"), Copy("e" * 60 + "/d", "r", "master", "d")])
    assert b"".join(store.get_file("r", "master", "e/" + bottom)) == b"x"
    assert b"".join(store.get_file("r", "master", "e" * 60 + "/d/" + bottom)) == b"x"


def test_a_split_file_s_records_must_fit(store):
    store.create_repo("r")
    at = deep(16) + "/" + "s" * 70  # 4087 bytes: fits, but its records would not
    with pytest.raises(NameTooLong):
        store.write_files("r", "master", [Put(at, stream=io.BytesIO(b"a\nb\n"), split="line")])
    store.write_files("r", "master", [Put(at[:-20], stream=io.BytesIO(b"a\nb\n"), split="line")])
    assert len(store.list_file("r", "master", at[:-20])) == 2


@pytest.mark.parametrize(
    "op, error",
    [
        (Symlink("l", ""), "empty"),
        (Symlink("l", "a\0b"), "NUL"),
        (Symlink("l", "t" * 4096), "longer than 4095"),
        (Symlink("l", "\udc80"), "not valid UTF-8"),
        (Put("\ud800x", stream=io.BytesIO(b"")), "not valid UTF-8"),
        (Mkdir("a/" + "c" * 256), "longer than 255"),
    ],
)
def test_bad_names_and_targets_are_refused_with_one_line(store, op, error):
    store.create_repo("r")
    with pytest.raises(InvalidArgument, match=error):
        store.write_files("r", "master", [op])


def test_fsck_finds_what_restore_would_refuse(tmp_path, monkeypatch):
    """A store written under a laxer limit (as before the directory-copy check) holds a path over
    4096 bytes: fsck names it, and restore of its dump refuses it without restoring anything."""
    source = Store(Home(tmp_path / "source"))
    twin = Store(Home(tmp_path / "twin"))
    try:
        source.create_repo("r")
        with monkeypatch.context() as m:
            m.setattr(names, "MAX_PATH", 8192)
            source.write_files("r", "master", [Put(deep(17), stream=io.BytesIO(b"x"))])
        problems = source.fsck()
        assert len(problems) == 1 and "longer than 4096" in problems[0], problems
        assert NAME[:40] in problems[0]
        dump = b"".join(source.extract())
        with pytest.raises(NameTooLong):
            twin.restore(io.BytesIO(dump))
        assert twin.list_repo() == []
    finally:
        source.close()
        twin.close()
