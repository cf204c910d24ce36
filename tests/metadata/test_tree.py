"""Directory trees as prolly trees of pages, against a real RocksDB and a plain dict model."""

from __future__ import annotations

import gc
import random
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfsfuse.metadata import records, tree
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.errors import DataLoss, FailedPrecondition
from pfsfuse.metadata.records import (
    EMPTY_DIR,
    ChunkRef,
    DirNode,
    FileNode,
    Inner,
    Leaf,
    SymlinkNode,
)

SEED = 12345
DIR = "<dir>"  # a directory in the dict model


class Counting:
    """A PageReader/PageWriter that counts page reads and page writes."""

    def __init__(self, inner):
        self.inner = inner
        self.reads = 0
        self.writes = 0

    def page(self, h):
        self.reads += 1
        return self.inner.page(h)

    def put_page(self, page):
        self.writes += 1
        return self.inner.put_page(page)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def chunk(db, i: int, size: int = 10) -> ChunkRef:
    return ChunkRef(db.hash(f"chunk {i}".encode()), size)


def file(db, i: int, size: int = 10) -> FileNode:
    """A file whose content is identified by `i` (pure: writes nothing)."""
    chunks = (chunk(db, i, size),)
    return FileNode(size, db.hash(records.encode(chunks)), chunks)


def height(src, d: DirNode) -> int:
    page = src.page(d.root)
    return page.level + 1 if isinstance(page, Inner) else 1


def path_key(path: str) -> tuple[str, ...]:
    """Path order: pre-order with names sorted at each level."""
    return tuple(path.split("/")) if path else ()


def all_pages(src, d: DirNode) -> set[bytes]:
    out = set()

    def visit(h):
        out.add(h)
        page = src.page(h)
        if isinstance(page, Inner):
            for c in page.children:
                visit(c[1])
        else:
            for _, node in page.entries:
                if isinstance(node, DirNode) and node.root is not None:
                    visit(node.root)

    if d.root is not None:
        visit(d.root)
    return out


@pytest.fixture
def db(tmp_path):
    db = DB(str(tmp_path / "db"), seed=SEED)
    yield db
    db.close()


@pytest.fixture(scope="module")
def mdb(tmp_path_factory):
    """One DB for the hypothesis tests (each example writes through its own Txn) and the big
    directory."""
    db = DB(str(tmp_path_factory.mktemp("tree") / "db"), seed=SEED)
    yield db
    db.close()


def big_name(i: int) -> str:
    return f"file-{i:06d}"


@pytest.fixture(scope="module")
def big(mdb):
    """A committed 100,000-entry directory (and how long building it took)."""
    txn = mdb.txn()
    files = {big_name(i): file(mdb, i) for i in range(0, 200_000, 2)}
    started = time.perf_counter()
    root = tree.apply(txn, EMPTY_DIR, files)
    elapsed = time.perf_counter() - started
    txn.commit()
    return root, files, elapsed


# -- files -------------------------------------------------------------------------------------


def test_make_file_inline(db):
    txn = db.txn()
    chunks = [chunk(db, i, 100 + i) for i in range(tree.INLINE_CHUNKS)]
    node = tree.make_file(txn, chunks, executable=True)
    assert node.size == sum(c.size for c in chunks)
    assert node.chunks == tuple(chunks)
    assert node.executable
    assert node.hash == db.hash(records.encode(tuple(chunks)))
    assert tree.file_chunks(txn, node) == tuple(chunks)
    assert txn.new_bytes == db.txn().new_bytes  # nothing stored for an inline list


def test_make_file_blob(db):
    txn = db.txn()
    chunks = [chunk(db, i, 1000) for i in range(tree.INLINE_CHUNKS + 1)]
    node = tree.make_file(txn, chunks)
    assert node.chunks is None
    assert node.size == 1000 * len(chunks)
    assert node.hash == db.hash(records.encode(tuple(chunks)))
    assert tree.file_chunks(txn, node) == tuple(chunks)
    txn.commit()
    assert tree.file_chunks(db, node) == tuple(chunks)
    assert db.blob(node.hash) == records.encode(tuple(chunks))


def test_stored_pages_are_the_pages_undecoded(db, wide):
    """What the daemon sends a msgpack caller of tree_pages: the stored bytes, which decode to the
    pages; a chunk list stored beside them is refused, as is a missing hash."""
    root, _ = wide
    hashes = sorted(all_pages(db, root))
    assert len(hashes) > 3
    stored = db.stored_pages(hashes)
    assert [records.decode(records.Page, data) for data in stored] == [db.page(h) for h in hashes]
    assert all(records.is_page(data) for data in stored)

    txn = db.txn()
    listed = tree.make_file(txn, [chunk(db, i, 1000) for i in range(tree.INLINE_CHUNKS + 1)])
    txn.commit()
    assert not records.is_page(db.blob(listed.hash))
    with pytest.raises(ValueError):
        db.stored_pages([hashes[0], listed.hash])
    with pytest.raises(DataLoss):
        db.stored_pages([b"\x01" * 16])


def test_make_empty_file(db):
    node = tree.make_file(db.txn(), [])
    assert node == FileNode(0, db.hash(records.encode(())), ())
    assert tree.file_chunks(db, node) == ()


# -- reading -----------------------------------------------------------------------------------


@pytest.fixture
def wide(db):
    """A committed 3,000-entry directory of varied names (several pages, three levels)."""
    rng = random.Random(1)
    alphabet = "abcdefghij-_.0123456789"
    names = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(3000)})
    txn = db.txn()
    entries = {name: file(db, i) for i, name in enumerate(names)}
    root = tree.apply(txn, EMPTY_DIR, entries)
    txn.commit()
    return root, entries


def test_child_and_lookup(db, wide):
    root, entries = wide
    assert height(db, root) >= 3
    assert root.count == len(entries)
    assert root.size == 10 * len(entries)
    for name, node in entries.items():
        assert tree.child(db, root, name) == node
        assert tree.lookup(db, root, name) == node
    names = sorted(entries)
    for missing in ["", " ", names[0][:-1] + "!", names[-1] + "~", "zzzz", names[100] + "\0"]:
        assert missing not in entries
        assert tree.child(db, root, missing) is None
    assert tree.lookup(db, root, "") == root
    assert tree.lookup(db, root, names[0] + "/x") is None  # through a file
    assert tree.child(db, EMPTY_DIR, "x") is None
    counting = Counting(db)
    tree.child(counting, root, names[1234])
    assert counting.reads == height(db, root)


def test_list_dir(db, wide):
    root, entries = wide
    expected = sorted(entries.items())
    assert list(tree.list_dir(db, root)) == expected
    names = [n for n, _ in expected]
    for i in [0, 1, 31, 32, 33, 500, 1999, len(names) - 2, len(names) - 1]:
        assert list(tree.list_dir(db, root, start_after=names[i])) == expected[i + 1 :]
        between = names[i] + "\0"  # not a name: lands between two entries
        assert list(tree.list_dir(db, root, start_after=between)) == expected[i + 1 :]
    assert list(tree.list_dir(db, root, start_after="")) == expected
    assert list(tree.list_dir(db, root, start_after="~")) == []
    assert list(tree.list_dir(db, EMPTY_DIR)) == []


def test_list_dir_seeks_and_is_lazy(mdb, big):
    root, files, _ = big
    names = sorted(files)
    counting = Counting(mdb)
    it = tree.list_dir(counting, root, start_after=names[77_777])
    assert counting.reads == 0
    got = [next(it) for _ in range(5)]
    assert [n for n, _ in got] == names[77_778:77_783]
    assert counting.reads <= height(mdb, root) + 1


def test_leaf_hashes_cover_a_listing_from_where_it_starts(db, wide, mdb, big):
    for src, (root, entries) in ((db, wide), (mdb, big[:2])):
        expected = sorted(entries.items())
        names = [n for n, _ in expected]
        leaves = {h for h in all_pages(src, root) if isinstance(src.page(h), Leaf)}
        assert list(tree.leaf_hashes(src, root)) and set(tree.leaf_hashes(src, root)) == leaves
        for after in [
            None,
            "",
            names[0],
            names[1],
            names[31],
            names[32],
            names[len(names) // 2] + "\0",
            names[-2],
            names[-1],
            "~",
        ]:
            hashes = list(tree.leaf_hashes(src, root, after))
            listed = [e for h in hashes for e in src.page(h).entries]
            want = list(tree.list_dir(src, root, after))
            assert [e for e in listed if after is None or e[0] > after] == want
            # From the leaf `after` falls in: the next leaf begins past it.
            assert hashes and (after is None or hashes[0] == leaf_of(src, root, after))
    assert list(tree.leaf_hashes(db, EMPTY_DIR)) == []


def leaf_of(src, root: DirNode, name: str) -> bytes:
    """The leaf `name` falls in: the last whose first name is <= it, or the first."""
    h = root.root
    while isinstance(page := src.page(h), Inner):
        h = ([c[1] for c in page.children if c[0] <= name] or [page.children[0][1]])[-1]
    return h


def test_leaf_hashes_read_no_leaf(mdb, big):
    root, files, _ = big
    counting = Counting(mdb)
    hashes = list(tree.leaf_hashes(counting, root, sorted(files)[50_000]))
    assert len(hashes) > 1000
    assert counting.reads < len(hashes) // 10  # the pages above the leaves only


def test_walk(db):
    txn = db.txn()
    changes = {
        "b/y": file(db, 1),
        "a-b": file(db, 2),
        "a/z/q": file(db, 3),
        "a/c": SymlinkNode("../b"),
        "e": EMPTY_DIR,
        "a/z/p": file(db, 4),
    }
    root = tree.apply(txn, EMPTY_DIR, changes)
    got = [p for p, _ in tree.walk(txn, root)]
    assert got == ["a", "a/c", "a/z", "a/z/p", "a/z/q", "a-b", "b", "b/y", "e"]
    sub = tree.lookup(txn, root, "a")
    assert [p for p, _ in tree.walk(txn, sub, "x")] == ["x/c", "x/z", "x/z/p", "x/z/q"]
    assert dict(tree.walk(txn, root))["a/c"] == SymlinkNode("../b")


def test_deep_paths(db):
    """Paths deeper than Python's recursion limit (a 4096-byte path has 2048 components)."""
    txn = db.txn()
    deep = "/".join(["d"] * 2000)
    root = tree.apply(txn, EMPTY_DIR, {deep: file(db, 1)})
    assert tree.lookup(txn, root, deep) == file(db, 1)
    assert len(list(tree.walk(txn, root))) == 2000
    root2 = tree.apply(txn, root, {deep: file(db, 2)})
    assert list(tree.diff(txn, root2, root)) == [(deep, file(db, 2), file(db, 1))]
    assert len([k for k, _ in tree.refs(txn, root2, set()) if k == "page"]) == 2000


# -- apply: semantics --------------------------------------------------------------------------


def test_apply_semantics(db):
    txn = db.txn()
    f1, f2, f3 = file(db, 1, 5), file(db, 2, 7), file(db, 3, 11)
    root = tree.apply(txn, EMPTY_DIR, {"a/b/c": f1, "a/d": f2})
    a = tree.lookup(txn, root, "a")
    assert (root.size, root.count, a.size, a.count) == (12, 1, 12, 2)

    # Order matters between a path and its ancestors: the later change wins.
    r = tree.apply(txn, root, {"a": None, "a/x": f3})
    assert [p for p, _ in tree.walk(txn, r)] == ["a", "a/x"]
    r = tree.apply(txn, root, {"a/x": f3, "a": None})
    assert r == EMPTY_DIR
    r = tree.apply(txn, root, {"a/b": f3, "a/b/c": None})
    with pytest.raises(FailedPrecondition, match="a/b is a file, not a directory"):
        tree.apply(txn, root, {"a/b": f3, "a/b/c/d": f1})
    with pytest.raises(FailedPrecondition, match="a/d is a file, not a directory"):
        tree.apply(txn, root, {"a/d/e": f1})
    link = tree.apply(txn, root, {"l": SymlinkNode("a")})
    with pytest.raises(FailedPrecondition, match="l is a symlink, not a directory"):
        tree.apply(txn, link, {"l/x": f1})

    # Deleting a missing path, or one under a file, changes nothing and creates nothing.
    assert tree.apply(txn, root, {"nope": None, "x/y/z": None, "a/d/e": None}) == root

    # An emptied directory stays; a put replaces a whole directory.
    r = tree.apply(txn, root, {"a/b/c": None})
    assert tree.lookup(txn, r, "a/b") == EMPTY_DIR
    assert r.size == 7
    r = tree.apply(txn, root, {"a": f3})
    assert list(tree.walk(txn, r)) == [("a", f3)]
    sub = tree.apply(txn, EMPTY_DIR, {"p/q": f1})
    r = tree.apply(txn, root, {"a/b": sub})
    assert [p for p, _ in tree.walk(txn, r)] == ["a", "a/b", "a/b/p", "a/b/p/q", "a/d"]
    assert r.size == 12

    # Puts of the same content are no-ops.
    assert tree.apply(txn, root, {"a/d": f2, "a/b/c": f1}) == root
    assert tree.apply(txn, root, {}) == root


# -- apply: against a dict model ---------------------------------------------------------------


def model_apply(src, model: dict, changes: dict) -> dict:
    """Each change in turn on a dict path -> node (DIR for directories)."""
    m = dict(model)
    for path, node in changes.items():
        ancestors = [path[:i] for i, ch in enumerate(path) if ch == "/"]
        if any(a in m and m[a] != DIR for a in ancestors):
            if node is None:
                continue
            raise FailedPrecondition(path)
        for p in [p for p in m if p == path or p.startswith(path + "/")]:
            del m[p]
        if node is None:
            continue
        for a in ancestors:
            m.setdefault(a, DIR)
        if isinstance(node, DirNode):
            m[path] = DIR
            for p, n in tree.walk(src, node, path):
                m[p] = DIR if isinstance(n, DirNode) else n
        else:
            m[path] = node
    return m


def check_against_model(src, root: DirNode, model: dict) -> None:
    got = [(p, DIR if isinstance(n, DirNode) else n) for p, n in tree.walk(src, root)]
    assert got == sorted(model.items(), key=lambda kv: path_key(kv[0]))
    dirs = {"": root} | {p: n for p, n in tree.walk(src, root) if isinstance(n, DirNode)}
    for d, node in dirs.items():
        below = [p for p in model if not d or p.startswith(d + "/")]
        assert node.size == sum(model[p].size for p in below if model[p] != DIR)
        direct = [p for p in below if p.count("/") == (d.count("/") + 1 if d else 0)]
        assert node.count == len(direct)
        assert node.subdirs == sum(1 for p in direct if model[p] == DIR)
        assert node.nlink == 2 + node.subdirs


def from_scratch(txn, model: dict, rng: random.Random) -> DirNode:
    """The tree of `model` built in one apply on an empty directory, in a random order."""
    leaves = {}
    for p, n in model.items():
        if n != DIR:
            leaves[p] = n
        elif not any(q.startswith(p + "/") for q in model):
            leaves[p] = EMPTY_DIR
    items = list(leaves.items())
    rng.shuffle(items)
    return tree.apply(txn, EMPTY_DIR, dict(items))


def model_diff(new: dict, old: dict) -> list:
    out = []
    for p in set(new) | set(old):
        n = new.get(p) if new.get(p) != DIR else None
        o = old.get(p) if old.get(p) != DIR else None
        if n != o:
            out.append((p, n, o))
    return sorted(out, key=lambda t: path_key(t[0]))


names = st.sampled_from(["a", "b", "a-b", "c", "dd"])
paths = st.lists(names, min_size=1, max_size=3).map("/".join)


@st.composite
def nodes(draw):
    kinds = ["file", "file", "file", "link", "empty", "sub", "delete", "delete"]
    kind = draw(st.sampled_from(kinds))
    if kind == "file":
        return ("file", draw(st.integers(0, 5)))
    if kind == "link":
        return ("link", draw(st.sampled_from(["x", "../y"])))
    return (kind, None)


def make_node(db, sub: DirNode, spec):
    kind, arg = spec
    return {
        "file": lambda: file(db, arg, arg * 3 + 1),
        "link": lambda: SymlinkNode(arg),
        "empty": lambda: EMPTY_DIR,
        "sub": lambda: sub,
        "delete": lambda: None,
    }[kind]()


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(st.tuples(paths, nodes()), max_size=8), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_apply_matches_model(mdb, batches, order):
    txn = mdb.txn()
    sub = tree.apply(txn, EMPTY_DIR, {"x": file(mdb, 9), "y/z": file(mdb, 8, 100), "e": EMPTY_DIR})
    root, model = EMPTY_DIR, {}
    for batch in batches:
        changes = {p: make_node(mdb, sub, spec) for p, spec in batch}
        try:
            expected = model_apply(txn, model, changes)
        except FailedPrecondition:
            with pytest.raises(FailedPrecondition):
                tree.apply(txn, root, changes)
            continue
        new = tree.apply(txn, root, changes)
        check_against_model(txn, new, expected)
        assert list(tree.diff(txn, new, root)) == model_diff(expected, model)
        assert list(tree.diff(txn, root, new)) == model_diff(model, expected)
        root, model = new, expected
        assert from_scratch(txn, model, order) == root


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 2500),
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 5200), st.integers(1, 200), st.booleans()), max_size=12),
        min_size=1,
        max_size=4,
    ),
    order=st.randoms(use_true_random=False),
)
def test_incremental_pages_are_canonical(mdb, n, batches, order):
    """Range puts and deletes over a directory of many pages give the same pages as a rebuild,
    and the directory's count of subdirectories follows them (every seventh entry is one)."""

    def name(i):
        return f"{i:04d}" + "x" * (i % 3)

    def entry(i, version=0):
        return EMPTY_DIR if (i + version) % 7 == 0 else file(mdb, i + version)

    txn = mdb.txn()
    model = {name(i): entry(i) for i in range(0, 2 * n, 2)}
    root = tree.apply(txn, EMPTY_DIR, model)
    version = 0
    for batch in batches:
        changes = {}
        for start, length, delete in batch:
            version += 1
            for i in range(start, start + length):
                changes[name(i)] = None if delete else entry(i, version)
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        counting = Counting(txn)
        root = tree.apply(counting, root, changes)
        assert list(tree.list_dir(txn, root)) == sorted(model.items())
        assert (root.count, root.size) == (len(model), sum(e.size for e in model.values()))
        assert root.subdirs == sum(isinstance(e, DirNode) for e in model.values())
        assert from_scratch(txn, model, order) == root
        if root.root is not None:
            page = txn.page(root.root)
            assert isinstance(page, Leaf) or len(page.children) > 1


def test_one_insert_into_100k_entries(mdb, big):
    root, files, build_time = big
    assert root.count == 100_000
    assert height(mdb, root) >= 3
    for change in [
        {"file-100001": file(mdb, 7)},  # insert in the middle
        {"file-000000": None},  # delete the first
        {"file-199998": file(mdb, 8)},  # replace the last
        {"a": file(mdb, 9)},  # insert before everything
    ]:
        txn = mdb.txn()
        counting = Counting(txn)
        started = time.perf_counter()
        new = tree.apply(counting, root, change)
        elapsed = time.perf_counter() - started
        assert counting.writes <= 8
        assert txn.new_bytes < 64 * 1024
        name, node = next(iter(change.items()))
        assert tree.child(txn, new, name) == node
        print(
            f"\n100k entries: built in {build_time:.2f}s; {change} wrote {counting.writes} pages,"
            f" {txn.new_bytes} bytes in {elapsed * 1000:.2f}ms"
        )


def test_big_changes_are_canonical(mdb, big):
    root, files, _ = big
    txn = mdb.txn()
    rng = random.Random(2)
    names = sorted(files)
    changes: dict = dict.fromkeys(names[10000:30000])
    changes.update({f"file-{i:06d}": file(mdb, -i) for i in rng.sample(range(1, 200_000, 2), 5000)})
    new = tree.apply(txn, root, changes)
    model = {n: f for n, f in files.items() if changes.get(n, f) is not None}
    model.update({n: f for n, f in changes.items() if f is not None})
    assert new == tree.apply(txn, EMPTY_DIR, dict(sorted(model.items(), reverse=True)))
    assert [n for n, _ in tree.list_dir(txn, new)] == sorted(model)
    # Deleting nearly everything collapses the levels: at most leaves under one root remain.
    keep = names[50_000:50_010]
    small = tree.apply(txn, root, {n: None for n in names if n not in keep})
    top = txn.page(small.root)
    assert isinstance(top, Leaf) or all(isinstance(txn.page(c[1]), Leaf) for c in top.children)
    assert small == tree.apply(txn, EMPTY_DIR, {n: files[n] for n in keep})


# -- diff --------------------------------------------------------------------------------------


def test_diff_kinds(db):
    txn = db.txn()
    f1, f2 = file(db, 1), file(db, 2)
    old = tree.apply(txn, EMPTY_DIR, {"a/x": f1, "a/y": f1, "b": f1, "c/d/e": f1, "empty": EMPTY_DIR})
    new = tree.apply(
        txn,
        old,
        {"a/y": f2, "b": None, "b/z": f2, "c": f2, "empty": None, "new/empty": EMPTY_DIR},
    )
    assert list(tree.diff(txn, new, old)) == [
        ("a/y", f2, f1),
        ("b", None, f1),
        ("b/z", f2, None),
        ("c", f2, None),
        ("c/d/e", None, f1),
    ]
    assert list(tree.diff(txn, new, new)) == []
    assert list(tree.diff(txn, old, EMPTY_DIR, "p")) == [
        ("p/a/x", f1, None),
        ("p/a/y", f1, None),
        ("p/b", f1, None),
        ("p/c/d/e", f1, None),
    ]


def test_diff_reads_log_n_pages(mdb, big):
    root, files, _ = big
    txn = mdb.txn()
    changes = [{"file-100001": file(mdb, 5)}, {"file-100000": file(mdb, 6)}, {"file-100000": None}]
    for change in changes:
        new = tree.apply(txn, root, change)
        counting = Counting(txn)
        ((name, node),) = change.items()
        assert list(tree.diff(counting, new, root)) == [(name, node, files.get(name))]
        assert counting.reads <= 4 * height(mdb, root)
        print(f"\ndiff of 100k entries after {change}: {counting.reads} page reads")


# -- refs --------------------------------------------------------------------------------------


def test_refs_share_seen(db):
    txn = db.txn()
    long = tree.make_file(txn, [chunk(db, i) for i in range(10)])
    files = {f"d{i % 7}/f{i:04d}": file(db, i) for i in range(2000)}
    root = tree.apply(txn, EMPTY_DIR, files | {"long": long, "l": SymlinkNode("x"), "e": EMPTY_DIR})
    txn.commit()
    seen: set[bytes] = set()
    first = list(tree.refs(db, root, seen))
    assert len(first) == len(set(first))
    pages = {h for k, h in first if k == "page"}
    assert pages == all_pages(db, root)
    assert {h for k, h in first if k == "blob"} == {long.hash}
    chunks = {h for k, h in first if k == "chunk"}
    assert chunks == {chunk(db, i).hash for i in range(2000)}

    txn = db.txn()
    counting = Counting(txn)
    root2 = tree.apply(counting, root, {"d3/f0003": file(db, 5000), "long2": long})
    txn.commit()
    second = list(tree.refs(db, root2, seen))
    assert {h for k, h in second if k == "page"} == all_pages(db, root2) - pages
    assert len(second) <= counting.writes + 1  # new pages, and the one new chunk
    assert [h for k, h in second if k == "chunk"] == [chunk(db, 5000).hash]
    assert list(tree.refs(db, root2, seen)) == []


def test_refs_chunk_with_a_page_hash(db):
    """A file whose bytes are a page's encoding has a chunk id equal to the page hash."""
    txn = db.txn()
    linked = tree.apply(txn, EMPTY_DIR, {"x": SymlinkNode("y")})
    data = records.encode(txn.page(linked.root))
    assert db.hash(data) == linked.root
    f = tree.make_file(txn, [ChunkRef(linked.root, len(data))])
    lookalike = tree.apply(txn, EMPTY_DIR, {"f": f})
    seen: set[bytes] = set()
    assert ("chunk", linked.root) in list(tree.refs(txn, lookalike, seen))
    assert list(tree.refs(txn, linked, seen)) == [("page", linked.root)]


def test_decoded_tree_records_are_left_to_reference_counting(db):
    """Pages and nodes are never tracked by the cyclic garbage collector, which would otherwise
    walk every page a huge listing decodes."""
    txn = db.txn()
    d = tree.apply(txn, EMPTY_DIR, {f"f{i}": file(db, i) for i in range(3)} | {"l": SymlinkNode("f0")})
    txn.commit()
    page = records.decode(records.Page, records.encode(db.page(d.root)))
    assert isinstance(page, Leaf)
    node = page.entries[0][1]
    assert isinstance(node, FileNode) and node.chunks
    for obj in (page, node, node.chunks[0], page.entries[-1][1], d, tree.apply(txn, EMPTY_DIR, {"d": d})):
        assert not gc.is_tracked(obj), type(obj).__name__


def test_a_directory_stored_uncounted_is_counted_when_it_changes(db, monkeypatch):
    """A directory stored before subdirectories were counted shows 1 link until a change below
    it counts them; past COUNT_UNCOUNTED entries it stays uncounted (counting would cost its size)."""
    txn = db.txn()
    d = tree.apply(txn, EMPTY_DIR, {"a/x": file(db, 1), "b": EMPTY_DIR, "c": file(db, 2)})
    assert (d.subdirs, d.nlink) == (2, 4)
    old = msgspec.structs.replace(d, subdirs=None)
    assert old.nlink == 1
    assert tree.apply(txn, old, {"e": EMPTY_DIR}).nlink == 5
    monkeypatch.setattr(tree, "COUNT_UNCOUNTED", 2)
    assert tree.apply(txn, old, {"e": EMPTY_DIR}).subdirs is None
    assert tree.apply(txn, old, {"a": None, "b": None, "c": None}).nlink == 2  # emptied: counted
