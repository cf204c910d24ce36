"""Hard links in the store: names of one file, sharing content and stat, counted."""

from __future__ import annotations

import io

import pytest

from pfsfuse.api.types import Chmod, Copy, Delete, Mknod, Put, SetStat, Symlink
from pfsfuse.home import Home
from pfsfuse.metadata.errors import AlreadyExists, InvalidArgument
from pfsfuse.metadata.records import Stat
from pfsfuse.store import Store


def _read(store, repo, ref, path) -> bytes:
    return b"".join(store.get_file(repo, ref, path))


def _link(repo: str, src: str, dst: str) -> Copy:
    return Copy(dst, repo, "master", src, link=True)


def test_a_hard_link_shares_content_stat_and_count(store):
    store.create_repo("r")
    st = Stat(0o640, 1000, 1000, 10**18, 10**18)
    store.write_files("r", "master", [Put("a", stream=io.BytesIO(b"one"), stat=st), _link("r", "a", "d/b")])
    a, b = store.inspect_file("r", "master", "a"), store.inspect_file("r", "master", "d/b")
    assert a.link is not None and a.link == b.link
    assert a.nlink == b.nlink == 2
    assert a.hash == b.hash and a.mode == b.mode == 0o640
    # A write through one name is a write to the file: every name reads it.
    store.write_files("r", "master", [Put("d/b", stream=io.BytesIO(b"two, longer"))])
    assert _read(store, "r", "master", "a") == b"two, longer"
    # So is a change of its mode.
    store.write_files("r", "master", [SetStat("a", Stat(0o600, 1000, 1000, 5, 5))])
    assert store.inspect_file("r", "master", "d/b").mode == 0o600
    store.write_files("r", "master", [Chmod("d/b", True)])
    assert store.inspect_file("r", "master", "a").executable
    # A third name, then two removed: the last one is left, counted alone.
    store.write_files("r", "master", [_link("r", "d/b", "c")])
    assert {store.inspect_file("r", "master", p).nlink for p in ("a", "c", "d/b")} == {3}
    store.write_files("r", "master", [Delete("a"), Delete("d/b")])
    c = store.inspect_file("r", "master", "c")
    assert c.nlink == 1 and _read(store, "r", "master", "c") == b"two, longer"


def test_a_copy_is_a_file_of_its_own_and_content_hashes_stay(store):
    store.create_repo("r")
    store.write_files("r", "master", [Put("a", stream=io.BytesIO(b"x"))])
    plain = store.inspect_file("r", "master", "a").hash
    store.write_files("r", "master", [_link("r", "a", "b"), Copy("c", "r", "master", "a")])
    assert store.inspect_file("r", "master", "a").hash == plain  # a link is not content
    c = store.inspect_file("r", "master", "c")
    assert c.link is None and c.nlink is None
    store.write_files("r", "master", [Put("c", stream=io.BytesIO(b"only c"))])
    assert _read(store, "r", "master", "a") == b"x"
    # The history keeps the links it had.
    assert store.inspect_file("r", "master^", "b").nlink == 2


def test_a_write_cannot_forge_a_link(store):
    store.create_repo("r")
    forged = Stat(0o644, 0, 0, 1, 1, link=7, nlink=5)
    store.write_files("r", "master", [Put("a", stream=io.BytesIO(b"x"), stat=forged)])
    a = store.inspect_file("r", "master", "a")
    assert a.link is None and a.nlink is None


def test_bad_hard_links_are_refused(store):
    store.create_repo("r")
    store.create_repo("s")
    store.write_files("r", "master", [Put("d/a", stream=io.BytesIO(b"x")), Put("e", stream=io.BytesIO(b"y"))])
    with pytest.raises(InvalidArgument, match="a directory cannot be hard-linked"):
        store.write_files("r", "master", [_link("r", "d", "d2")])
    with pytest.raises(AlreadyExists):
        store.write_files("r", "master", [Copy("e", "r", "master", "d/a", overwrite=False, link=True)])
    with pytest.raises(InvalidArgument, match="same repo"):
        store.write_files("s", "master", [Copy("x", "r", "master", "d/a", link=True)])
    assert store.inspect_file("r", "master", "e").link is None


def test_extract_and_restore_keep_hard_links(store, tmp_path):
    from pfsfuse.home import Home
    from pfsfuse.store import Store

    store.create_repo("r")
    store.write_files("r", "master", [Put("a", stream=io.BytesIO(b"x")), _link("r", "a", "b")])
    twin = Store(Home(tmp_path / "twin"))
    try:
        twin.restore(io.BytesIO(b"".join(store.extract())))
        a, b = twin.inspect_file("r", "master", "a"), twin.inspect_file("r", "master", "b")
        assert a.link == b.link == store.inspect_file("r", "master", "a").link and b.nlink == 2
        twin.write_files("r", "master", [Put("b", stream=io.BytesIO(b"y"))])  # still one file
        assert _read(twin, "r", "master", "a") == b"y"
        assert twin.fsck() == []
    finally:
        twin.close()


def test_fifos_devices_and_symlinks_are_hard_linked_too(store):
    """As on a disk, any entry but a directory may have several names."""
    store.create_repo("r")
    st = Stat(0o640, 1000, 1000, 10**18, 10**18)
    store.write_files(
        "r",
        "master",
        [Mknod("p", "fifo", 0, st), Mknod("tty", "char", 0x501, st), Symlink("l", "target", st)],
    )
    store.write_files("r", "master", [_link("r", n, f"{n}2") for n in ("p", "tty", "l")])
    for name in ("p", "tty", "l"):
        one, two = store.inspect_file("r", "master", name), store.inspect_file("r", "master", f"{name}2")
        assert one.link is not None and one.link == two.link and one.nlink == two.nlink == 2, name
        assert one.type == two.type
    store.write_files("r", "master", [SetStat("p2", Stat(0o600, 7, 7, 5, 5))])  # through one name
    assert (store.inspect_file("r", "master", "p").mode, store.inspect_file("r", "master", "p").uid) == (0o600, 7)
    store.write_files("r", "master", [Delete("tty")])
    assert store.inspect_file("r", "master", "tty2").nlink == 1


def test_fsck_finds_names_of_one_link_that_differ(tmp_path, monkeypatch):
    """A store written while relinking was broken: a write through one name left the other name
    with the old content. fsck names both; a sound link passes."""
    from pfsfuse.engine import writes

    store = Store(Home(tmp_path / "home"))
    try:
        store.create_repo("r")
        store.write_files("r", "master", [Put("a", stream=io.BytesIO(b"one")), _link("r", "a", "d/b")])
        store.write_files("r", "master", [Put("c", stream=io.BytesIO(b"x")), _link("r", "c", "e")])
        assert store.fsck() == []
        with monkeypatch.context() as m:
            m.setattr(writes._Batch, "relink", lambda self: None)
            store.write_files("r", "master", [Put("d/b", stream=io.BytesIO(b"two"))])
        problems = store.fsck()
        assert len(problems) == 1, problems
        assert "a and d/b are names of one hard link but differ" in problems[0]
    finally:
        store.close()
