"""The mount's big directories are read by tree page through a bounded cache: lookups and
listings agree with the daemon's, also once the pages they need were evicted."""

from __future__ import annotations

import io
import os
import subprocess

import msgspec
import pytest

from helpers import fuse_unavailable, wait_for
from pfsfuse.api import wire
from pfsfuse.api.transport import Transport
from pfsfuse.api.types import Copy, Delete, Mkdir, Mknod, Put, Symlink
from pfsfuse.metadata.errors import NotFound
from pfsfuse.metadata.records import DirNode, Inner, Page
from pfsfuse.mount import trees as trees_mod


@pytest.fixture
def big_dir(daemon):
    client = daemon.client()
    try:
        client.create_repo("r")
        client.write_files("r", "master", [Put(f"big/f{i:05}", stream=io.BytesIO(b"%d" % i)) for i in range(5000)])
        node = client.glob_nodes("r", "master", "big")[0][1]
        assert isinstance(node, DirNode) and node.count == 5000
        yield client, node
    finally:
        client.close()


def test_lookups_and_listings_by_tree_page_after_eviction(big_dir, monkeypatch):
    client, d = big_dir
    monkeypatch.setattr(trees_mod, "FULL_LISTING", 100)  # 5,000 entries: a big directory here
    monkeypatch.setattr(trees_mod, "PAGE", 700)
    t = trees_mod.Trees(client, page_cache=2000)  # room for 2,000 of the 5,000 entries
    want = client.dir_entries(d.root)
    listed, after = [], None
    while page := t.page(d, after):
        listed.extend(page)
        after = page[-1][0]
    assert listed == want
    assert t.page(d, "f04990") == want[4991:]
    for _ in range(2):  # the second round reads pages evicted in the first
        for name, node in want[::7] + [("f0", None), ("g", None), ("f04999x", None)]:
            assert t.child(d, name) == node
            hit = t.cached_child(d, name)
            assert hit is None or hit == (node,)
            assert t.tree_page_weight() <= 2000 + 500 + 200  # leaves and inner pages, one page over
    assert t.cached_child(d, want[-1][0]) == (want[-1][1],)  # just read: at hand


def test_tree_pages_by_hash(daemon, big_dir):
    """Pages come the same in msgpack (sent as stored) and in JSON; a hash that is not a page's
    is not found either way."""
    client, d = big_dir
    [root] = client.tree_pages([d.root])
    assert root.children  # an Inner page: 5,000 entries do not fit one leaf
    hashes = [d.root, *(c[1] for c in root.children)]
    json = Transport(f"unix:{daemon.home}/pfs.sock")
    try:

        def as_json(hashes: list[bytes]) -> list[Page]:
            body = wire.encode_args("tree_pages", {"hashes": hashes})
            return msgspec.json.decode(json.call("POST", "/rpc/tree_pages", body), type=list[Page])

        assert as_json(hashes) == client.tree_pages(hashes)
        client.write_files("r", "master", [Put("big-file", stream=io.BytesIO(os.urandom(24 << 20)))])
        [(_, listed)] = client.glob_nodes("r", "master", "big-file")
        assert listed.chunks is None  # its chunk list is stored beside the pages, by its hash
        for tree_pages in (client.tree_pages, as_json):
            with pytest.raises(NotFound):
                tree_pages([b"\x01" * 16])
            with pytest.raises(NotFound):
                tree_pages([d.root, listed.hash])
    finally:
        json.close()


@pytest.mark.fuse
@pytest.mark.slow
@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_a_directory_past_the_full_listing_through_fuse(daemon, mounts, tmp_home):
    """`ls` and `find` of a directory too big to be cached whole show what the daemon lists."""
    n = trees_mod.FULL_LISTING + 2000
    client = daemon.client()
    try:
        client.create_repo("r")
        client.write_files("r", "master", (Put(f"big/f{i:06}", stream=io.BytesIO(b"%d" % i)) for i in range(n)))
        want = [f"f{i:06}" for i in range(n)]
    finally:
        client.close()
    mounts("--read-only")
    big = tmp_home / "mnt" / "r" / "master" / "big"
    assert sorted(os.listdir(big)) == want
    found = subprocess.run(["find", str(big), "-type", "f", "-printf", "%f %s\n"], capture_output=True, check=True)
    sizes = dict(line.split() for line in found.stdout.decode().splitlines())
    assert sorted(sizes) == want and all(int(sizes[f"f{i:06}"]) == len(b"%d" % i) for i in range(0, n, 997))
    assert (big / want[-1]).read_bytes() == b"%d" % (n - 1)


@pytest.mark.fuse
@pytest.mark.slow
@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_a_big_directory_listed_plainly(daemon, mounts, tmp_home):
    """A plain listing (os.scandir, find, ls -f) of a directory past the full listing is read from
    the daemon's names pages: the same names, types and inode numbers a stat gives, a hard link's
    names sharing one. Only its first batch (READDIRPLUS) fetches small files ahead; past it, a
    reader's first read of a file starts fetching the files after it."""
    n = trees_mod.FULL_LISTING + 1000
    client = daemon.client()
    try:
        client.create_repo("r")
        client.write_files("r", "master", (Put(f"big/f{i:06}", stream=io.BytesIO(b"%d" % i)) for i in range(n)))
        special = [Symlink("big/s-link", "f000001"), Mkdir("big/s-dir"), Mknod("big/s-fifo", "fifo")]
        client.write_files("r", "master", [*special, Copy("big/s-hard", "r", "master", "big/f000002", link=True)])
    finally:
        client.close()
    m = mounts("--read-only")
    big = m.path / "r" / "master" / "big"

    def fetched() -> int:
        return int(os.getxattr(m.path, "user.pfs.fetched"))

    before = fetched()
    with os.scandir(big) as entries:
        listed = {
            e.name: (e.inode(), e.is_dir(follow_symlinks=False), e.is_symlink(), e.is_file(follow_symlinks=False))
            for e in entries
        }
    assert sorted(listed) == [f"f{i:06}" for i in range(n)] + ["s-dir", "s-fifo", "s-hard", "s-link"]
    assert [k for k, v in listed.items() if v[1]] == ["s-dir"] and [k for k, v in listed.items() if v[2]] == ["s-link"]
    assert not any(listed["s-fifo"][1:]) and all(listed[f"f{i:06}"][3] for i in range(0, n, 1000))
    for name in ("f000000", "f001500", "f025000", f"f{n - 1:06}", "s-link", "s-dir", "s-fifo", "s-hard", "f000002"):
        assert listed[name][0] == os.lstat(big / name).st_ino, name
    assert listed["s-hard"][0] == listed["f000002"][0]
    first_batch = sum(len(b"%d" % i) for i in range(256))  # a window of the first READDIRPLUS's files
    wait_for(lambda: fetched() - before >= first_batch, what="the first batch's window")
    assert fetched() - before == first_batch

    start = 20_000  # well into the names pages
    assert (big / f"f{start:06}").read_bytes() == b"%d" % start
    window = sum(len(b"%d" % i) for i in range(start, start + 256))
    wait_for(lambda: fetched() - before - first_batch >= window, what="the window after the first file read")
    for i in range(start, start + 300):
        assert (big / f"f{i:06}").read_bytes() == b"%d" % i


def test_a_second_listing_asks_for_leaves_in_batches(big_dir, monkeypatch):
    """Inner pages outlive their leaves in the cache: listing again after the leaves were
    evicted still asks for a level-1 page's missing leaves at once, not one request each."""
    client, d = big_dir
    monkeypatch.setattr(trees_mod, "FULL_LISTING", 100)
    monkeypatch.setattr(trees_mod, "PAGE", 700)
    asked: list[int] = []
    real = client.tree_pages

    def counted(hashes: list[bytes]):
        asked.append(len(hashes))
        return real(hashes)

    monkeypatch.setattr(client, "tree_pages", counted)
    t = trees_mod.Trees(client, page_cache=2000)  # room for 2,000 of the 5,000 entries
    want = client.dir_entries(d.root)
    requests = []
    for _ in range(2):
        asked.clear()
        listed, after = [], None
        while page := t.page(d, after):
            listed.extend(page)
            after = page[-1][0]
        assert listed == want
        requests.append(len(asked))
    # A request per leaf would be this many. (How many each listing makes follows the tree's
    # shape, which the store's keyed hash cuts differently in each store.)
    leaves = _leaves(real, d.root)
    assert max(requests) <= leaves // 2, (requests, leaves)


def test_a_listing_bigger_than_the_cache_fetches_each_page_once(big_dir, monkeypatch):
    """Leaves come just before the listing reads them, never more than the cache holds ahead of
    it: none is evicted before it is read and fetched again."""
    client, d = big_dir
    monkeypatch.setattr(trees_mod, "FULL_LISTING", 100)
    monkeypatch.setattr(trees_mod, "PAGE", 700)
    asked: list[bytes] = []
    real = client.tree_pages
    monkeypatch.setattr(client, "tree_pages", lambda hashes: asked.extend(hashes) or real(hashes))
    t = trees_mod.Trees(client, page_cache=1000)  # room for a fifth of the entries
    listed, after = [], None
    while page := t.page(d, after):
        listed.extend(page)
        after = page[-1][0]
    assert listed == client.dir_entries(d.root)
    assert len(asked) == len(set(asked))
    assert len(asked) >= _leaves(real, d.root)


def _leaves(tree_pages, h: bytes) -> int:
    [page] = tree_pages([h])
    return sum(_leaves(tree_pages, c[1]) for c in page.children) if isinstance(page, Inner) else 1


def test_a_listing_asks_for_all_below_a_level_2_page_at_once(big_dir, monkeypatch):
    """A listing reads everything below a level-2 page next: its level-1 pages come in one
    request and their leaves LISTED_LEAVES a request, not a request per level-1 page."""
    client, d = big_dir
    monkeypatch.setattr(trees_mod, "FULL_LISTING", 100)
    step = 16
    monkeypatch.setattr(trees_mod, "LISTED_LEAVES", step)

    def requests_below(h: bytes) -> list[list[bytes]]:
        """What a listing asks for below the page `h`, of level 2 or more (the store's keyed
        hashes cut the pages, so 5,000 entries make three or four levels)."""
        [page] = client.tree_pages([h])
        assert isinstance(page, Inner) and page.level >= 2
        if page.level > 2:
            return [r for c in page.children for r in [[c[1]], *requests_below(c[1])]]
        level1 = client.tree_pages([c[1] for c in page.children])
        leaves = [c[1] for p in level1 if isinstance(p, Inner) for c in p.children]
        return [[c[1] for c in page.children], *(leaves[i : i + step] for i in range(0, len(leaves), step))]

    want = [[d.root], *requests_below(d.root)]
    asked: list[list[bytes]] = []
    real = client.tree_pages
    monkeypatch.setattr(client, "tree_pages", lambda hashes: asked.append(hashes) or real(hashes))
    t = trees_mod.Trees(client)
    listed, after = [], None
    while page := t.page(d, after):
        listed.extend(page)
        after = page[-1][0]
    assert listed == client.dir_entries(d.root)
    assert asked == want


def test_listings_a_write_answers_with_are_served_without_asking(daemon, monkeypatch):
    """A mount's flush asks for the listings of the small directories it changed: the lookups
    after it (sqlite's unlink of its journal, an editor's rename) are answered from them."""
    client = daemon.client()
    try:
        client.create_repo("r")
        client.write_files("r", "master", [Put(f"d/f{i}", stream=io.BytesIO(b"%d" % i)) for i in range(10)])
        commit = client.start_commit("r", "master")
        journal = Put("d/db-journal", stream=io.BytesIO(b"j"))
        result = client.write_files("r", commit.id, [journal, Delete("d/f3")], True)
        asked: list[bytes] = []
        real = client.dir_entries
        monkeypatch.setattr(client, "dir_entries", lambda root, *a: asked.append(root) or real(root, *a))
        t = trees_mod.Trees(client)
        t.seed(result.listings)
        d = t.child(result.tree, "d")
        assert isinstance(d, DirNode) and d.count == 10
        assert t.child(d, "f3") is None and t.child(d, "db-journal").size == 1
        assert [name for name, _ in t.page(d, None)] == sorted(["db-journal", *(f"f{i}" for i in range(10) if i != 3)])
        assert asked == []
        assert t.page(d, None) == real(d.root)  # what the daemon would have listed
    finally:
        client.close()
