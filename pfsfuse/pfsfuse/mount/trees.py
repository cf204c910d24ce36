"""Directory listings, chunk lists and chunks, fetched by hash from the daemon and cached.

Everything here is content addressed and immutable, so the caches never need invalidating: a
branch that moves simply leads to other hashes. All methods block (they talk to the daemon or the
object store) and are called from worker threads.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

from pfsfuse.api.client import TREE_PAGES_MAX, Client
from pfsfuse.api.types import DirNames, Listing
from pfsfuse.metadata import tree
from pfsfuse.metadata.records import ChunkRef, DirNode, FileNode, Inner, Leaf, Node, Page

PAGE = 10_000  # entries per listing request
# A listing's first page: a first READDIRPLUS takes a few hundred entries, and a reader that goes
# on without stats (find, ls -f) goes on with names only (`names`).
FIRST_PAGE = 1024
FULL_LISTING = 50_000  # directories up to this size are cached whole; bigger ones by tree page
# Entries of big directories' tree pages kept: bounds the mount's memory (a decoded entry holds
# about 700 bytes: 131,072 of them about 90 MB).
PAGE_CACHE = 1 << 17
# Leaves a listing asks for at once: about 4,000 entries, a few MB decoded (bigger requests
# made the daemon's and the mount's memory peak higher, for little time saved).
LISTED_LEAVES = 128


class _Miss(Exception):
    """A tree page not in the cache (see `Trees.cached_child`)."""


class _LRU:
    """A thread-safe LRU map bounded by the total weight of its values."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    @property
    def weight(self) -> int:
        return self._weight

    def __contains__(self, key) -> bool:
        return key in self._items  # no reordering: a look, not a use

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key, value, weight: int = 1) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            self._evict()

    def _evict(self) -> None:
        while self._weight > self.capacity and len(self._items) > 1:
            _, (_, w) = self._items.popitem(last=False)
            self._weight -= w


class _Inflight:
    """Pages being fetched, by hash: a second reader of one waits for the request already made
    instead of making it again (a listing's next page, fetched ahead, races its reader there)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: dict[bytes, threading.Event] = {}

    def claim(self, hashes: list[bytes]) -> tuple[list[bytes], dict[bytes, threading.Event]]:
        """(the hashes the caller is to fetch, the events of those being fetched already)."""
        mine: dict[bytes, None] = {}  # (a hash twice in `hashes` is fetched once)
        theirs = {}
        with self._lock:
            for h in hashes:
                e = self._events.get(h)
                if e is None:
                    self._events[h] = threading.Event()
                    mine[h] = None
                elif h not in mine:
                    theirs[h] = e
        return list(mine), theirs

    def done(self, hashes: list[bytes]) -> None:
        """Fetched (or failed: a waiter then finds them missing, and asks itself)."""
        with self._lock:
            for h in hashes:
                self._events.pop(h).set()


class Trees:
    """Reads of immutable tree objects through a client, with caches keyed by hash."""

    def __init__(
        self, client: Client, cache_entries: int = 1 << 17, cache_bytes: int = 256 << 20, page_cache: int = PAGE_CACHE
    ):
        self.client = client
        self._dirs = _LRU(cache_entries)  # dir root -> ({name: node}, [(name, node)] sorted)
        # Big directories: their tree pages by hash (weighed in entries), read as the daemon's
        # index reads them; a lookup reads a page per level, a listing the pages in turn. Inner
        # pages have a cache of their own, so that prefetched leaves never evict the path to them.
        caches = (_LRU(page_cache // 4), _LRU(page_cache), _Inflight())
        self._tree_pages = _Pages(client, *caches, listing=True)
        # Lookups come in any order (find sorts a big directory's names by inode number, which
        # is a hash): a held level-1 page's missing leaf is fetched alone.
        self._lookup_pages = _Pages(client, *caches)
        self._cached_pages = _Pages(client, *caches, only_cached=True)
        self._chunk_lists = _LRU(1 << 18)  # file hash -> chunk refs
        self._locations = _LRU(1 << 18)  # chunk hash -> ChunkLoc
        self._chunks = _LRU(cache_bytes)  # chunk hash -> bytes
        self._longest = _LRU(cache_entries)  # dir root -> bytes of the longest path below it
        self.store = getattr(client, "chunk_store", None)  # direct object-store reads, if trusted

    def tree_page_weight(self) -> int:
        """Entries of big directories' tree pages held in memory (bounded by `page_cache`)."""
        return self._tree_pages.weight()

    # -- directories

    def _whole(self, d: DirNode) -> tuple[dict[str, Node], list[tuple[str, Node]]]:
        if d.root is None:
            return {}, []
        listing = self._dirs.get(d.root)
        if listing is None:
            items, after = [], None
            while True:
                page = self.client.dir_entries(d.root, after, PAGE)
                items.extend(page)
                if len(page) < PAGE:
                    break
                after = page[-1][0]
            listing = (dict(items), items)
            self._dirs.put(d.root, listing, max(1, len(items)))
        return listing

    def seed(self, listings: list[Listing]) -> None:
        """Take whole listings of small directories (by root) the daemon sent unasked."""
        for root, items in listings:
            if len(items) <= FULL_LISTING:
                self._dirs.put(root, (dict(items), items), max(1, len(items)))

    def child(self, d: DirNode, name: str) -> Node | None:
        hit = self.cached_child(d, name)
        if hit is not None:
            return hit[0]
        if d.count <= FULL_LISTING or d.root is None:
            return self._whole(d)[0].get(name)
        return tree.child(self._lookup_pages, d, name)

    def cached_child(self, d: DirNode, name: str) -> tuple[Node | None] | None:
        """(node,) when the answer is at hand without asking the daemon, else None."""
        if d.root is None:
            return (None,)
        if d.count <= FULL_LISTING:
            listing = self._dirs.get(d.root)
            return None if listing is None else (listing[0].get(name),)
        try:
            return (tree.child(self._cached_pages, d, name),)
        except _Miss:
            return None

    def page(self, d: DirNode, start_after: str | None, limit: int = PAGE) -> list[tuple[str, Node]]:
        """Up to `limit` entries after `start_after`, in name order."""
        if d.root is None:
            return []
        if d.count <= FULL_LISTING:
            items = self._whole(d)[1]
            lo = 0 if start_after is None else _bisect_after(items, start_after)
            return items[lo : lo + limit]
        return list(itertools.islice(tree.list_dir(self._tree_pages, d, start_after), limit))

    def paged(self, d: DirNode) -> bool:
        """Whether `d` is big enough to be read a tree page at a time, not cached whole."""
        return d.root is not None and d.count > FULL_LISTING

    def names(self, d: DirNode, start_after: str | None) -> DirNames:
        """Up to PAGE names (with their types, link ids and small files' chunks) after
        `start_after`: a plain listing of a big directory, which needs no nodes. The daemon reads
        the pages and sends only these; nothing is cached (the kernel keeps such a listing)."""
        assert d.root is not None
        return self.client.dir_names(d.root, start_after, PAGE)

    def longest(self, d: DirNode) -> int:
        """Bytes of the longest path below `d`, relative to it (0 when it is empty): what a
        rename must check to keep every path below within the store's limit."""
        found: dict[bytes, int] = {}  # this walk's answers (the cache may evict them meanwhile)

        def known(node: DirNode) -> int | None:
            if node.root is None:
                return 0
            return found.get(node.root, self._longest.get(node.root))

        stack = [d]  # not recursion: trees may be deeper than Python's recursion limit
        while stack:
            top = stack[-1]
            if known(top) is not None:
                stack.pop()
                continue
            entries = self._entries(top)
            todo = [n for _, n in entries if isinstance(n, DirNode) and known(n) is None]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            assert top.root is not None  # known() answers for empty directories
            found[top.root] = max(len(name.encode()) + _below(n, known) for name, n in entries)
            self._longest.put(top.root, found[top.root])
        result = known(d)
        assert result is not None  # the walk ends with d's answer
        return result

    def _entries(self, d: DirNode) -> list[tuple[str, Node]]:
        out: list[tuple[str, Node]] = []
        while page := self.page(d, out[-1][0] if out else None):
            out.extend(page)
            if len(page) < PAGE:
                break
        return out

    # -- files

    def chunks(self, f: FileNode) -> tuple[ChunkRef, ...]:
        if f.chunks is not None:
            return f.chunks
        refs = self._chunk_lists.get(f.hash)
        if refs is None:
            refs = tuple(self.client.chunk_list(f.hash))
            self._chunk_lists.put(f.hash, refs, len(refs))
        return refs

    def cached_chunk(self, h: bytes) -> bytes | None:
        return self._chunks.get(h)

    def locate(self, refs) -> None:
        """Learn where chunks are in the object store: one request for all not known yet."""
        if self.store is None:
            return
        missing = [r.hash for r in refs if self._locations.get(r.hash) is None]
        if missing:
            for h, loc in zip(missing, self.client.chunk_locations(missing), strict=True):
                self._locations.put(h, loc)

    def _relocate(self, hashes: list[bytes]) -> list:
        """Where chunks are now that a garbage collection moved them to new packs."""
        locs = self.client.chunk_locations(hashes)
        for h, loc in zip(hashes, locs, strict=True):
            self._locations.put(h, loc)
        return locs

    def fetch(self, refs: list[ChunkRef]) -> None:
        """Fetch chunks into the cache: from the object store when this process may read it
        (each chunk verified against its hash), else through the daemon."""
        if self.store is None:
            for r in refs:
                self._chunks.put(r.hash, self.client.read_chunk(r), r.size)
            return
        self.locate(refs)
        located = [(r.hash, r.size, self._locations.get(r.hash)) for r in refs]
        datas = list(self.store.reader.read_moving(located, self._relocate))
        for r, data in zip(refs, datas, strict=True):
            self._chunks.put(r.hash, data, r.size)


class _Plans:
    """The leaves below the inner pages that listings read, in listing order, with the entries of
    each: a leaf a listing misses comes with the next ones it will read (LISTED_LEAVES a request,
    and no more than half the cache holds), just before it reads them, so a directory bigger
    than the cache is never fetched ahead of its reader by more than the cache holds."""

    def __init__(self, kept: int = 1 << 16):
        self._lock = threading.Lock()
        self._kept = kept  # leaves planned, at most (about 200 bytes each)
        # By inner page, oldest first: [(leaf, entries in it)]
        self._plans: OrderedDict[bytes, list[tuple[bytes, int]]] = OrderedDict()
        self._size = 0
        self._at: dict[bytes, tuple[list[tuple[bytes, int]], int]] = {}

    def add(self, h: bytes, leaves: list[tuple[bytes, int]]) -> None:
        with self._lock:
            if h in self._plans:
                self._plans.move_to_end(h)
                return
            self._plans[h] = leaves
            self._size += len(leaves)
            for i, (leaf, _) in enumerate(leaves):
                self._at[leaf] = (leaves, i)
            while self._size > self._kept and len(self._plans) > 1:
                _, old = self._plans.popitem(last=False)
                self._size -= len(old)
                for leaf, _ in old:
                    at = self._at.get(leaf)
                    if at is not None and at[0] is old:
                        del self._at[leaf]

    def planned(self, leaf: bytes) -> bool:
        with self._lock:
            return leaf in self._at

    def after(self, leaf: bytes, n: int, room: int) -> list[bytes]:
        """The leaves a listing reads after `leaf`, if it is planned: `n` at most, holding at
        most `room` entries."""
        with self._lock:
            at = self._at.get(leaf)
        if at is None:
            return []
        leaves, i = at
        out = []
        for h, entries in leaves[i + 1 : i + 1 + n]:
            room -= entries
            if room < 0:
                break
            out.append(h)
        return out


class _Pages:
    """Tree pages by hash (a `tree.PageReader`), cached, fetched from the daemon on a miss; with
    `only_cached`, a miss raises _Miss instead. A level-1 page fetched brings its leaves in the
    same breath (a lookup reads one of them next); with `listing` (a listing's reader), the
    leaves below a level-1 or level-2 page are planned instead (_Plans)."""

    def __init__(
        self,
        client: Client,
        inners: _LRU,
        leaves: _LRU,
        inflight: _Inflight,
        only_cached: bool = False,
        listing: bool = False,
    ):
        self.client = client
        self.inners = inners
        self.leaves = leaves
        self.inflight = inflight
        self.only_cached = only_cached
        self.plans = _Plans() if listing else None

    def page(self, h: bytes) -> Page:
        found = self.inners.get(h) or self.leaves.get(h)
        held = found is not None
        if found is None:
            if self.only_cached:
                raise _Miss
            ahead = self.plans.after(h, LISTED_LEAVES - 1, self.leaves.capacity // 2) if self.plans else []
            found = self._fetch_with(h, ahead)
        if isinstance(found, Inner) and found.level <= 2:
            if self.plans is not None:
                self._plan(h, found)
            elif not held and found.level == 1:
                self._fetch_missing([c[1] for c in found.children], self.leaves, TREE_PAGES_MAX)
        return found

    def _plan(self, h: bytes, page: Inner) -> None:
        """A listing reads all below `page` next, in order."""
        assert self.plans is not None
        if page.level == 1:
            if not self.plans.planned(page.children[0][1]):  # (else planned with its parent)
                self.plans.add(h, [(c[1], c[3]) for c in page.children])
            return
        # Its level-1 pages in one request, instead of a request each (a request costs the
        # daemon about 1.6 ms beside its pages).
        level1 = self._fetch_missing([c[1] for c in page.children], self.inners, TREE_PAGES_MAX)
        self.plans.add(h, [(c[1], c[3]) for p in level1 if isinstance(p, Inner) for c in p.children])

    def _fetch_with(self, h: bytes, ahead: list[bytes]) -> Page:
        """The page `h`, fetched with those of `ahead` neither held nor being fetched, in one
        request (or from the request already made for it)."""
        mine, theirs = self.inflight.claim([h, *(a for a in ahead if a not in self.leaves)])
        try:
            fetched = dict(zip(mine, self._fetch(mine), strict=True))
        finally:
            self.inflight.done(mine)
        found = fetched.get(h)
        if found is None:
            if h in theirs:
                theirs[h].wait()
            found = self.inners.get(h) or self.leaves.get(h)
        return found if found is not None else self._fetch([h])[0]

    def _fetch_missing(self, hashes: list[bytes], cache: _LRU, per_request: int) -> list[Page]:
        """The pages `hashes`, those not in `cache` fetched, `per_request` at a time (those
        being fetched already waited for)."""
        mine, theirs = self.inflight.claim([h for h in hashes if h not in cache])
        for i in range(0, len(mine), per_request):
            batch = mine[i : i + per_request]
            try:
                self._fetch(batch)
            except BaseException:
                self.inflight.done(mine[i:])
                raise
            self.inflight.done(batch)
        for e in theirs.values():
            e.wait()
        return [p for p in map(cache.get, hashes) if p is not None]

    def _fetch(self, hashes: list[bytes]) -> list[Page]:
        pages = self.client.tree_pages(hashes) if hashes else []
        for h, p in zip(hashes, pages, strict=True):
            if isinstance(p, Leaf):
                self.leaves.put(h, p, max(1, len(p.entries)))
            else:
                self.inners.put(h, p, max(1, len(p.children)))
        return pages

    def weight(self) -> int:
        """Entries and children held: what bounds the memory of big directories' pages."""
        return self.leaves.weight + self.inners.weight

    def blob(self, h: bytes) -> bytes:
        raise NotImplementedError("the mount reads chunk lists with chunk_list")

    def hash(self, data) -> bytes:
        raise NotImplementedError("the mount reads trees, it does not write them")


def _below(node: Node, known) -> int:
    """What an entry adds below its own name: '/' and the longest path under it, if any."""
    below = known(node) if isinstance(node, DirNode) else 0
    return 1 + below if below else 0


def _bisect_after(items: list[tuple[str, Node]], name: str) -> int:
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if items[mid][0] <= name:
            lo = mid + 1
        else:
            hi = mid
    return lo
