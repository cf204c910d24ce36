"""Headers and footers on directories (split files), and the tree helpers that split files use."""

from __future__ import annotations

import msgspec
import pytest

from pfsfuse.metadata import records, tree
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.records import EMPTY_DIR, ChunkRef, DirNode, FileNode


@pytest.fixture
def db(tmp_path):
    db = DB(str(tmp_path / "db"), seed=7)
    try:
        yield db
    finally:
        db.close()


def make(txn, name: str, n_chunks: int = 1) -> FileNode:
    return tree.make_file(txn, [ChunkRef(txn.hash(f"{name}{i}".encode()), 3) for i in range(n_chunks)])


def test_a_directory_keeps_its_frame_when_its_entries_change(db):
    txn = db.txn()
    header, footer = make(txn, "h"), make(txn, "f", n_chunks=6)  # the footer's list is a blob
    d = msgspec.structs.replace(EMPTY_DIR, header=header, footer=footer)
    root = tree.apply(txn, EMPTY_DIR, {"users": d})
    root = tree.apply(txn, root, {f"users/{i:016x}": make(txn, f"r{i}") for i in range(100)})
    root = tree.apply(txn, root, {"users/0000000000000005": None})
    txn.commit()
    users = tree.lookup(db, root, "users")
    assert (users.header, users.footer, users.count) == (header, footer, 99)
    # The frame is part of the directory's identity, and so of every hash above it.
    txn = db.txn()
    plain = tree.apply(txn, root, {"users": msgspec.structs.replace(users, header=None)})
    txn.commit()
    assert plain != root and tree.lookup(db, plain, "users").root == users.root
    assert records.decode(DirNode, records.encode(users)) == users


def test_refs_include_the_frame(db):
    txn = db.txn()
    header, footer = make(txn, "h"), make(txn, "f", n_chunks=6)
    d = msgspec.structs.replace(EMPTY_DIR, header=header, footer=footer)
    root = tree.apply(txn, EMPTY_DIR, {"users": d, "users/a": make(txn, "a")})
    txn.commit()
    found = set(tree.refs(db, root, set()))
    for f in (header, footer):
        assert {("chunk", c.hash) for c in tree.file_chunks(db, f)} <= found
    assert ("blob", footer.hash) in found
    assert tree.framed_chunks(db, d, [ChunkRef(b"x" * 16, 1)]) == [
        *tree.file_chunks(db, header),
        ChunkRef(b"x" * 16, 1),
        *tree.file_chunks(db, footer),
    ]


def test_floor_finds_the_greatest_name_not_above(db):
    txn = db.txn()
    names = [f"{i:016x}" for i in range(0, 3000, 3)]
    root = tree.apply(txn, EMPTY_DIR, {n: make(txn, n) for n in [*names, "zebra"]})
    txn.commit()
    assert tree.floor(db, root, "ffffffffffffffff")[0] == names[-1]
    assert tree.floor(db, root, f"{1000:016x}")[0] == f"{999:016x}"
    assert tree.floor(db, root, "0") is None
    assert tree.floor(db, EMPTY_DIR, "x") is None


def test_reverse_scans_keep_to_their_prefix(db):
    txn = db.txn()
    for key in (b"a\0" + b"1", b"b\0" + b"1", b"b\0" + b"2", b"c\0" + b"1"):
        txn.put("commits", key, b"")
    txn.commit()
    assert [k for k, _ in db.scan("commits", b"b\0", reverse=True)] == [b"b\0" + b"2", b"b\0" + b"1"]
