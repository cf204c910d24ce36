"""Merkle trees of directories, stored as content-addressed sorted pages (a prolly tree).

A directory is a sequence of (name, Node) entries sorted by name (Python str order). The sequence
is cut into Leaf pages: an entry ends a page when the keyed hash of its name, with the level mixed
in, is 0 modulo FANOUT (`_ends_page`); the last page ends wherever the sequence ends. The pages
form the level-1 sequence of (first name, page hash, bytes, entry count) items, cut into Inner pages
by the same rule, and so on until a level fits one page: that page is the root (`DirNode.root`).
Every level below the root has at least two pages; an empty directory has no root.

Because boundaries depend only on names, the pages (and so every hash) depend only on the
directory's contents, not on the history of edits: two equal directories have equal `DirNode`s,
unchanged pages are shared between commits, and `diff` skips equal subtrees and equal pages.

A change rewrites only the pages it falls into (`_apply_level`): re-cutting an affected page with
the change merged in goes on into the following old pages only until a new cut falls on an old
page boundary, after which the old pages are valid as they are. The pages replaced at one level are
changes to the level above, keyed by first name; the top level is re-cut whole, which adds or
removes levels as needed.

"Path order" throughout is pre-order with names sorted at each level: a directory comes before its
contents, and 'a/z' before 'a-b' (the order of `walk`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Protocol

import msgspec

from pfsfuse.metadata import records
from pfsfuse.metadata.errors import FailedPrecondition
from pfsfuse.metadata.names import join, split
from pfsfuse.metadata.records import (
    EMPTY_DIR,
    ChunkRef,
    DirNode,
    FileNode,
    Inner,
    Leaf,
    Node,
    Page,
)

FANOUT = 32  # expected entries per page
INLINE_CHUNKS = 4  # longer chunk lists are stored as a blob under the file's hash
# A changed directory stored before its subdirectories were counted is counted then, up to this
# many entries (past it, the change would cost the directory's size).
COUNT_UNCOUNTED = 4096

_key = itemgetter(0)  # the name of an entry, the first name of an Inner child


class PageReader(Protocol):
    def page(self, h: bytes) -> Page: ...
    def blob(self, h: bytes) -> bytes: ...
    def hash(self, data) -> bytes: ...


class PageWriter(PageReader, Protocol):
    def put_page(self, page: Page) -> bytes: ...
    def put_blob(self, data: bytes) -> bytes: ...


# -- files -------------------------------------------------------------------------------------


def make_file(dst: PageWriter, chunks: Sequence[ChunkRef], executable: bool = False) -> FileNode:
    """The node of a file made of `chunks`; a long chunk list is stored as a blob in `dst`."""
    chunks = tuple(chunks)
    data = records.encode(chunks)
    h = dst.hash(data)
    size = sum(c.size for c in chunks)
    if len(chunks) > INLINE_CHUNKS:
        dst.put_blob(data)  # stored under its hash, which is the file's hash
        return FileNode(size, h, None, executable)
    return FileNode(size, h, chunks, executable)


def file_chunks(src: PageReader, node: FileNode) -> tuple[ChunkRef, ...]:
    if node.chunks is not None:
        return node.chunks
    return records.decode(tuple[ChunkRef, ...], src.blob(node.hash))


# -- reading -----------------------------------------------------------------------------------


def child(src: PageReader, d: DirNode, name: str) -> Node | None:
    """The entry `name` of directory `d`, or None; reads one page per level."""
    found = floor(src, d, name)
    return found[1] if found is not None and found[0] == name else None


def lookup(src: PageReader, root: DirNode, path: str) -> Node | None:
    """The node at canonical `path` ('' is `root` itself), or None when there is none."""
    node: Node | None = root
    for name in path.split("/") if path else ():
        if not isinstance(node, DirNode):
            return None
        node = child(src, node, name)
    return node


def list_dir(src: PageReader, d: DirNode, start_after: str | None = None) -> Iterator[tuple[str, Node]]:
    """The entries of `d` in name order, after `start_after` if given, reading pages as it goes."""
    if d.root is None:
        return
    start = start_after or ""  # names are never empty
    cur = _Cursor(src, d.root, 0)
    cur.seek(start)
    entries = cur.leaf().entries
    yield from entries[bisect_right(entries, start, key=_key) :]
    while cur.end() is not None:
        cur.next()
        yield from cur.leaf().entries


def leaf_hashes(src: PageReader, d: DirNode, start_after: str | None = None) -> Iterator[bytes]:
    """The hashes of `d`'s leaves in name order, from the one `start_after` falls in (whose names
    up to it the reader skips, as `list_dir` does): for a reader that fetches leaves many at a
    time and decodes them itself. Reads only the pages above the leaves."""
    if d.root is None:
        return
    if isinstance(src.page(d.root), Leaf):
        yield d.root
        return
    key = start_after or ""
    cur = _Cursor(src, d.root, 1)
    cur.seek(key)
    children = cur.inner().children
    i = max(bisect_right(children, key, key=_key) - 1, 0)
    while True:
        for child in children[i:]:
            yield child[1]
        if cur.end() is None:
            return
        cur.next()
        children, i = cur.inner().children, 0


def floor(src: PageReader, d: DirNode, name: str) -> tuple[str, Node] | None:
    """The entry of `d` with the greatest name <= `name`, or None; reads one page per level."""
    if d.root is None:
        return None
    page = src.page(d.root)
    while isinstance(page, Inner):
        # The chosen child's first name is <= name, so its leaf holds an answer.
        i = bisect_right(page.children, name, key=_key) - 1
        if i < 0:
            return None
        page = src.page(page.children[i][1])
    i = bisect_right(page.entries, name, key=_key) - 1
    return page.entries[i] if i >= 0 else None


def framed_chunks(src: PageReader, parent: DirNode, chunks: Sequence[ChunkRef] = ()) -> list[ChunkRef]:
    """`chunks` between the header and the footer of `parent`: how a file of `parent` reads."""
    out = list(file_chunks(src, parent.header)) if parent.header is not None else []
    out.extend(chunks)
    if parent.footer is not None:
        out.extend(file_chunks(src, parent.footer))
    return out


def walk(src: PageReader, d: DirNode, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """(path, node) for every entry below `d`, in path order (directories before their contents)."""
    # An explicit stack rather than recursion: paths may be deeper than Python's recursion limit.
    stack = [(prefix, list_dir(src, d))]
    while stack:
        base, entries = stack[-1]
        for name, node in entries:
            path = join(base, name)
            yield path, node
            if isinstance(node, DirNode):
                stack.append((path, list_dir(src, node)))
                break
        else:
            stack.pop()


def walk_after(
    src: PageReader, d: DirNode, prefix: str = "", after: str | None = None
) -> Iterator[tuple[str, Node, DirNode]]:
    """(path, node, its directory) for the entries below `d` in path order, as `walk`, starting
    after the entry at relative path `after` (which need not exist): a page of a long walk,
    resumed by seeking one page per level instead of walking the part already sent."""
    stack: list[tuple[str, DirNode, Iterator[tuple[str, Node]]]] = []
    parts = after.split("/") if after else []
    base, here = prefix, d
    for i, name in enumerate(parts):
        stack.append((base, here, list_dir(src, here, name)))
        nxt = child(src, here, name)
        if not isinstance(nxt, DirNode):
            break
        base, here = join(base, name), nxt
        if i == len(parts) - 1:  # the last entry sent is a directory: its contents come next
            stack.append((base, here, list_dir(src, here)))
    if not parts:
        stack.append((prefix, d, list_dir(src, d)))
    while stack:
        base, parent, entries = stack[-1]
        for name, node in entries:
            path = join(base, name)
            yield path, node, parent
            if isinstance(node, DirNode):
                stack.append((path, node, list_dir(src, node)))
                break
        else:
            stack.pop()


def longest_path(src: PageReader, d: DirNode, memo: dict[bytes, int] | None = None) -> int:
    """The length in bytes of the longest path below `d`, relative to it (0 when it is empty).

    Pages never change, so `memo` (page hash -> its longest path) can be kept for good and shared
    across trees: a subtree already measured costs nothing."""
    memo = {} if memo is None else memo
    if d.root is None:
        return 0
    stack = [d.root]  # not recursion: trees may be deeper than Python's recursion limit
    while stack:
        h = stack[-1]
        if h in memo:
            stack.pop()
            continue
        page = src.page(h)
        if isinstance(page, Inner):
            below = [c[1] for c in page.children]
        else:
            below = [n.root for _, n in page.entries if isinstance(n, DirNode) and n.root is not None]
        missing = [b for b in below if b not in memo]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        if isinstance(page, Inner):
            memo[h] = max(memo[b] for b in below)
        else:
            memo[h] = max(len(name.encode()) + _longest_entry(n, memo) for name, n in page.entries)
    return memo[d.root]


def _longest_entry(node: Node, memo: dict[bytes, int]) -> int:
    """What a directory entry adds below its own name: '/' and its longest path, if any."""
    if isinstance(node, DirNode) and node.root is not None:
        return 1 + memo[node.root]
    return 0


def diff(
    src: PageReader, new: DirNode, old: DirNode, prefix: str = ""
) -> Iterator[tuple[str, Node | None, Node | None]]:
    """(path, new node, old node) for every non-directory path whose content differs (not only
    its stat), in path order.

    A side is None where the path is absent (or is a directory on that side). Directories on both
    sides are descended, not reported; empty directories are not reported. Equal subtrees and,
    inside large directories, equal pages are skipped unread.
    """
    stack = [(prefix, diff_entries(src, new, old))]
    while stack:
        base, entries = stack[-1]
        for name, n, o in entries:
            path = join(base, name)
            if isinstance(n, DirNode) and isinstance(o, DirNode):
                stack.append((path, diff_entries(src, n, o)))
                break
            # A directory on one side only: its files are against nothing, after its own path.
            if isinstance(n, DirNode):
                if o is not None:
                    yield path, None, o
                yield from _files(src, n, path, new_side=True)
            elif isinstance(o, DirNode):
                if n is not None:
                    yield path, n, None
                yield from _files(src, o, path, new_side=False)
            elif not same_content(n, o):
                yield path, n, o
        else:
            stack.pop()


def same_content(a: Node | None, b: Node | None) -> bool:
    """Whether two nodes differ at most in their stats: a touched file is the same file."""
    if a is None or b is None or type(a) is not type(b):
        return a is b
    return msgspec.structs.replace(a, stat=None) == msgspec.structs.replace(b, stat=None)


def refs(src: PageReader, d: DirNode, seen: set[bytes]) -> Iterator[tuple[str, bytes]]:
    """("page" | "blob" | "chunk", hash) for everything `d` refers to and `seen` does not hold.

    What is visited is added to `seen`, and a page already in `seen` is not descended into, so
    walking many commits with one `seen` costs only their unique pages. Chunks are recorded as
    b"c" + hash: chunk ids live in another namespace, and a file whose bytes equal a page's
    encoding has the page's hash, which must not hide the page.
    """
    stack: list[bytes] = []
    yield from _dir_refs(src, d, seen, stack)
    while stack:
        h = stack.pop()
        if h in seen:
            continue
        seen.add(h)
        yield "page", h
        page = src.page(h)
        if isinstance(page, Inner):
            stack.extend(c[1] for c in reversed(page.children))
            continue
        for _, node in page.entries:
            if isinstance(node, DirNode):
                yield from _dir_refs(src, node, seen, stack)
            elif isinstance(node, FileNode):
                yield from _file_refs(src, node, seen)


def _dir_refs(src: PageReader, d: DirNode, seen: set[bytes], stack: list[bytes]):
    """The header's and footer's refs; the root page goes on `stack`."""
    for f in (d.header, d.footer):
        if f is not None:
            yield from _file_refs(src, f, seen)
    if d.root is not None:
        stack.append(d.root)


def _file_refs(src: PageReader, node: FileNode, seen: set[bytes]):
    if node.chunks is None:
        if node.hash in seen:
            return
        seen.add(node.hash)
        yield "blob", node.hash
    for c in file_chunks(src, node):
        key = b"c" + c.hash
        if key not in seen:
            seen.add(key)
            yield "chunk", c.hash


# -- writing -----------------------------------------------------------------------------------


def apply(dst: PageWriter, root: DirNode, changes: Mapping[str, Node | None]) -> DirNode:
    """`root` with `changes` applied one after the other, in the mapping's order.

    A change maps a canonical non-empty path to a node, which replaces whatever is at the path
    (a whole directory included), or to None, which deletes the path and its subtree (a no-op when
    the path is missing, also when a parent is not a directory). Missing parent directories are
    created; a parent that is a file or symlink raises FailedPrecondition. Directories are never
    removed implicitly: an emptied one stays, empty.

    Changes are grouped per directory and applied bottom-up in batches; a new batch starts only
    where a change touches an ancestor or descendant of a pending path, where order matters.
    """
    batch = _Batch()
    for path, node in changes.items():
        if batch.conflicts(path):
            root = batch.apply(dst, root)
            batch = _Batch()
        batch.add(path, node)
    return batch.apply(dst, root)


def update(dst: PageWriter, d: DirNode, changes: Sequence[tuple[str, Node | None]]) -> DirNode:
    """Directory `d` with its entries changed: `changes` are (name, node, or None to delete),
    sorted by name. Cheaper than `apply` for many entries of one directory."""
    return _update(dst, d, list(changes))


class _Batch:
    """Changes none of which is at an ancestor of another, so they commute."""

    def __init__(self) -> None:
        # directory -> changes to its entries; every ancestor of a changed path has a (maybe empty)
        # group, so that the new sub-directory nodes can be carried up.
        self.groups: dict[str, dict[str, Node | None]] = {"": {}}
        self.puts: set[str] = set()  # directories with a put below them: created when missing
        self.paths: set[str] = set()

    def conflicts(self, path: str) -> bool:
        return path in self.groups or any(a in self.paths for a in _ancestors(path))

    def add(self, path: str, node: Node | None) -> None:
        self.paths.add(path)
        parent, name = split(path)
        self.groups.setdefault(parent, {})[name] = node
        for a in _ancestors(parent):
            self.groups.setdefault(a, {})
        if node is not None:
            self.puts.add(parent)
            self.puts.update(_ancestors(parent))

    def apply(self, dst: PageWriter, root: DirNode) -> DirNode:
        order = sorted(self.groups, key=_depth)
        # Top-down: the current node of each directory with changes below it. Directories under a
        # missing path or a non-directory are left out when only deletes fall in them.
        dirs = {"": root}
        for path in order[1:]:
            parent, name = split(path)
            if parent not in dirs:
                continue
            node = child(dst, dirs[parent], name)
            if isinstance(node, DirNode):
                dirs[path] = node
            elif path in self.puts:
                if node is not None:
                    kind = "file" if isinstance(node, FileNode) else getattr(node, "kind", "symlink")
                    raise FailedPrecondition(f"{path} is a {kind}, not a directory")
                dirs[path] = EMPTY_DIR
        # Bottom-up: each directory's new node is a change to its parent.
        for path in reversed(order):
            if path not in dirs:
                continue
            new = _update(dst, dirs[path], sorted(self.groups[path].items(), key=_key))
            if path and new != dirs[path]:
                parent, name = split(path)
                self.groups[parent][name] = new
        return new  # the root's, which comes last


def _ancestors(path: str) -> Iterator[str]:
    """'', 'a', 'a/b' for 'a/b/c'."""
    if path:
        yield ""
    i = path.find("/")
    while i >= 0:
        yield path[:i]
        i = path.find("/", i + 1)


def _depth(path: str) -> int:
    return path.count("/") + 1 if path else 0


def _update(dst: PageWriter, d: DirNode, changes: list[tuple[str, Node | None]]) -> DirNode:
    """`d` with its entries changed: `changes` are sorted (name, node or None to delete). The
    directory keeps its header, footer and stat; its count of subdirectories follows."""
    items = [(name, None if node is None else (name, node)) for name, node in changes]
    replaced: list = []  # the entries the changes replace or delete
    if d.root is None:
        new = _build(dst, [item for _, item in items if item is not None], 0)
        subdirs: int | None = 0
    else:
        top = _level(dst.page(d.root))
        level = 0
        while level < top and items:
            items = _apply_level(dst, d.root, level, items, replaced if level == 0 else None)
            level += 1
        if not items:
            return d
        new = _build(dst, _merge(_items(dst.page(d.root)), items, replaced if top == 0 else None), top)
        subdirs = d.subdirs
    if new.root is None:
        subdirs = 0
    elif subdirs is not None:
        added = sum(isinstance(node, DirNode) for _, node in changes)
        subdirs += added - sum(isinstance(node, DirNode) for _, node in replaced)
    elif new.count <= COUNT_UNCOUNTED:  # stored before subdirectories were counted
        subdirs = sum(isinstance(node, DirNode) for _, node in list_dir(dst, new))
    return DirNode(new.size, new.count, new.root, d.header, d.footer, d.stat, subdirs)


def _apply_level(dst: PageWriter, root: bytes, level: int, changes: list, replaced: list | None = None) -> list:
    """Apply sorted (key, item or None) `changes` to the pages of `level` under `root` (the
    items they replace or delete are added to `replaced`, when given).

    Returns the resulting changes to the level above: (first name, child item or None), sorted.
    """
    up: dict[str, tuple | None] = {}
    cur = _Cursor(dst, root, level)
    i = 0
    while i < len(changes):
        # A run: re-cut from the page the next change falls into until a cut meets an old boundary.
        cur.seek(changes[i][0])
        old: dict[str, list] = {}
        new: list[list] = []
        pending: list = []
        while True:
            items = _items(cur.page)
            old[items[0][0]] = items
            end = cur.end()
            j = i
            while j < len(changes) and (end is None or changes[j][0] < end):
                j += 1
            for item in _merge(items, changes[i:j], replaced):
                pending.append(item)
                if _ends_page(dst, item[0], level):
                    new.append(pending)
                    pending = []
            i = j
            if not pending or end is None:
                break
            cur.next()
        if pending:
            new.append(pending)
        for first in old:
            up[first] = None
        for page in new:
            first = page[0][0]
            if old.get(first) == page:
                del up[first]  # re-cut into the very same page
            else:
                up[first] = _put(dst, level, page)
    return sorted(up.items(), key=_key)


def _build(dst: PageWriter, items: list, level: int) -> DirNode:
    """The directory whose whole level-`level` sequence is `items`: cut it and the levels above."""
    # A level-0 sequence always needs its pages; above, cutting stops once one child is left.
    while len(items) > 1 or (level == 0 and items):
        items = [_put(dst, level, page) for page in _cut(dst, items, level)]
        level += 1
    if not items:
        return EMPTY_DIR
    _, h, size, count = items[0]
    # After deletions the single child may itself be an Inner page with one child: collapse.
    page = dst.page(h)
    while isinstance(page, Inner) and len(page.children) == 1:
        _, h, size, count = page.children[0]
        page = dst.page(h)
    return DirNode(size, count, h)


def _cut(src: PageReader, items: list, level: int) -> list[list]:
    pages: list[list] = []
    page: list = []
    for item in items:
        page.append(item)
        if _ends_page(src, item[0], level):
            pages.append(page)
            page = []
    if page:
        pages.append(page)
    return pages


def _ends_page(src: PageReader, key: str, level: int) -> bool:
    # Keyed, so that nobody can choose names that make pages huge or tiny.
    h = src.hash(key.encode() + bytes([level]))
    return int.from_bytes(h[:8], "big") % FANOUT == 0


def _put(dst: PageWriter, level: int, items: list) -> tuple[str, bytes, int, int]:
    """Write one page; return its item for the level above."""
    if level == 0:
        page: Page = Leaf(items)
        size, count = sum(node.size for _, node in items), len(items)
    else:
        page = Inner(level, items)
        size, count = sum(c[2] for c in items), sum(c[3] for c in items)
    return items[0][0], dst.put_page(page), size, count


def _merge(items: list, changes: list, replaced: list | None = None) -> list:
    """Sorted `items` with sorted (key, item or None) `changes` applied (the items they replace
    or delete are added to `replaced`, when given)."""
    out = []
    i = 0
    for key, new in changes:
        while i < len(items) and items[i][0] < key:
            out.append(items[i])
            i += 1
        if i < len(items) and items[i][0] == key:
            if replaced is not None:
                replaced.append(items[i])
            i += 1
        if new is not None:
            out.append(new)
    out.extend(items[i:])
    return out


def _items(page: Page) -> list:
    return page.entries if isinstance(page, Leaf) else page.children


def _level(page: Page) -> int:
    return page.level if isinstance(page, Inner) else 0


class _Cursor:
    """One page of one level of a tree, able to step to the next page through the levels above."""

    page: Page  # the current page, once `seek` has been called

    def __init__(self, src: PageReader, root: bytes, level: int):
        self.src = src
        self.root = root
        self.level = level
        self.path: list[tuple[Inner, int]] = []  # (page, child index) from the root down

    def seek(self, key: str) -> None:
        """Move to the page `key` belongs in: the last whose first name is <= key, or the first."""
        self.path = []
        page = self.src.page(self.root)
        while isinstance(page, Inner) and page.level > self.level:
            i = max(bisect_right(page.children, key, key=_key) - 1, 0)
            self.path.append((page, i))
            page = self.src.page(page.children[i][1])
        self.page = page

    def end(self) -> str | None:
        """The first name of the next page, or None on the last page."""
        for page, i in reversed(self.path):
            if i + 1 < len(page.children):
                return page.children[i + 1][0]
        return None

    def next(self) -> None:
        """Move to the next page (there must be one)."""
        depth = len(self.path)
        while self.path[-1][1] + 1 == len(self.path[-1][0].children):
            self.path.pop()
        parent, i = self.path.pop()
        self.path.append((parent, i + 1))
        page = self.src.page(parent.children[i + 1][1])
        while len(self.path) < depth:
            assert isinstance(page, Inner)  # above the cursor's level
            self.path.append((page, 0))
            page = self.src.page(page.children[0][1])
        self.page = page

    def leaf(self) -> Leaf:
        """The current page of a cursor at the bottom level."""
        assert isinstance(self.page, Leaf), "a cursor over leaves"
        return self.page

    def inner(self) -> Inner:
        """The current page of a cursor above the leaves."""
        assert isinstance(self.page, Inner), "a cursor over inner pages"
        return self.page


def diff_entries(src: PageReader, new: DirNode, old: DirNode) -> Iterator[tuple[str, Node | None, Node | None]]:
    """(name, new node, old node) for the entries of two directories that differ, in name order.

    Each side is a stack of pending (key, level, value), the front last: an entry (level -1, the
    node) or a page not yet read (its level, its hash; key a lower bound of its names). Equal pages
    at both fronts are skipped; otherwise the front with the smaller key (the higher level on a
    tie) is expanded or, being an entry, reported.
    """
    if new == old:
        return
    # Different directories have different roots: start from their contents.
    a: list = []
    b: list = []
    for stack, d in ((a, new), (b, old)):
        if d.root is not None:
            _expand(src, stack, d.root)
    while a or b:
        if a and b:
            ka, la, va = a[-1]
            kb, lb, vb = b[-1]
            if la >= 0 and lb >= 0 and va == vb:
                a.pop()
                b.pop()
                continue
            if la < 0 and lb < 0 and ka == kb:
                a.pop()
                b.pop()
                if va != vb:
                    yield ka, va, vb
                continue
            side = a if (ka, -la) < (kb, -lb) else b
        else:
            side = a or b
        key, level, value = side.pop()
        if level >= 0:
            _expand(src, side, value)
        elif side is a:
            yield key, value, None
        else:
            yield key, None, value


def _expand(src: PageReader, stack: list, h: bytes) -> None:
    page = src.page(h)
    if isinstance(page, Leaf):
        stack.extend((name, -1, node) for name, node in reversed(page.entries))
    else:
        stack.extend((c[0], page.level - 1, c[1]) for c in reversed(page.children))


def _files(src: PageReader, d: DirNode, prefix: str, new_side: bool):
    """The non-directories below `d`, as diff results against nothing on the other side."""
    for path, node in walk(src, d, prefix):
        if not isinstance(node, DirNode):
            yield (path, node, None) if new_side else (path, None, node)
