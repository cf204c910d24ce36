"""Checks every invariant of a store and names each problem it finds.

Branch heads, parents, children and provenance point at commits that exist; every tree page and
chunk list is present and hashes to its address; directory sizes and counts add up; every chunk a
file (or a directory's header or footer) references is indexed, readable and hashes right. Every
name, path and symlink target is one that the store accepts, so that whatever `pfs extract`
writes, `pfs restore` takes back. Shared subtrees and chunks are checked once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pfsfuse.metadata import names, records, tree
from pfsfuse.metadata.errors import PfsError
from pfsfuse.metadata.index import SUBVENANCE, commit_key, split_commit_key
from pfsfuse.metadata.records import (
    ChunkRef,
    Commit,
    CommitRef,
    DirNode,
    FileNode,
    Inner,
    Leaf,
    Node,
    Page,
    SpecialNode,
    SymlinkNode,
)

if TYPE_CHECKING:
    from pfsfuse.engine.core import EngineCore


class _Checker:
    def __init__(self, store: EngineCore):
        self.store = store
        self.db = store.db
        self.problems: list[str] = []
        # page -> (bytes, entries, subdirectories or None if a page below is bad), or None if bad
        self.pages: dict[bytes, tuple[int, int, int | None] | None] = {}
        self.files: set[bytes] = set()
        self.chunks: dict[bytes, tuple[ChunkRef, str]] = {}  # chunk -> (ref, first user)
        self.longest: dict[bytes, int] = {}  # page -> its longest path (tree.longest_path)
        self.linked: dict[bytes, list[tuple[str, Node]]] = {}  # page -> the hard links' names below it

    def problem(self, msg: str) -> None:
        self.problems.append(msg)

    def run(self) -> list[str]:
        idx = self.store.index
        for repo in idx.repos():
            self.valid(names.repo_name, repo.name, f"repo {repo.name!r}")
            commits = {c.id: c for c in idx.commits(repo.name)}
            for b in idx.branches(repo.name):
                where = f"branch {repo.name}@{b.name}"
                self.valid(names.branch_name, b.name, where)
                if b.head is not None and b.head not in commits:
                    self.problem(f"{where}: head {b.head} does not exist")
                for p in b.provenance:
                    if idx.branch(p.repo, p.name) is None:
                        self.problem(f"{where}: provenance {p.repo}@{p.name} does not exist")
            for c in commits.values():
                self.commit(c, commits)
        self.subvenance()
        self.verify_chunks()
        return self.problems

    def commit(self, c: Commit, commits: dict[str, Commit]) -> None:
        where = f"commit {c.repo}@{c.id}"
        if c.parent is not None:
            parent = commits.get(c.parent)
            if parent is None:
                self.problem(f"{where}: parent {c.parent} does not exist")
            elif c.id not in parent.children:
                self.problem(f"{where}: parent {c.parent} does not list it as a child")
        for kid in c.children:
            child = commits.get(kid)
            if child is None:
                self.problem(f"{where}: child {kid} does not exist")
            elif child.parent != c.id:
                self.problem(f"{where}: child {kid} has parent {child.parent}")
        for p in c.provenance:
            try:
                self.store.index.commit(p.repo, p.id)
            except PfsError:
                self.problem(f"{where}: provenance {p.repo}@{p.id} does not exist")
            if not self.db.exists(SUBVENANCE, commit_key(p.repo, p.id) + commit_key(c.repo, c.id)):
                self.problem(f"{where}: provenance {p.repo}@{p.id} is missing from the index")
        self.dir(c.tree, f"{c.repo}@{c.id}:/")
        self.depth(c)
        self.links(c)

    def valid(self, check, value: str, where: str) -> None:
        try:
            check(value)
        except PfsError as e:
            self.problem(f"{where}: {e}")

    def depth(self, c: Commit) -> None:
        """No path of the commit may pass the store's limit, wherever its subtrees are shared."""
        try:
            longest = tree.longest_path(self.db, c.tree, self.longest)
        except Exception:
            return  # a page missing or unreadable: reported by dir()
        if longest > names.MAX_PATH:
            self.problem(
                f"commit {c.repo}@{c.id}: a path is {longest} bytes, longer than {names.MAX_PATH}: "
                f"{self.longest_path_in(c.tree)[:80]}..."
            )

    def longest_path_in(self, d: DirNode) -> str:
        """The longest path below `d`, found by following what longest_path measured."""

        def length(entry) -> int:
            name, node = entry
            below = tree.longest_path(self.db, node, self.longest) if isinstance(node, DirNode) else 0
            return len(name.encode()) + (1 + below if below else 0)

        parts = []
        node: Node = d
        while isinstance(node, DirNode) and node.root is not None:
            name, node = max(tree.list_dir(self.db, node), key=length)
            parts.append(name)
        return "/".join(parts)

    def links(self, c: Commit) -> None:
        """The names of one hard link in a commit are one file: the same content and stat. (Their
        count is not checked: removing or copying a directory holding some names leaves the
        count of the others as it was until the link next changes, as docs/files.md says.)"""
        first: dict[int, tuple[str, Node]] = {}
        for path, node in self.linked.get(c.tree.root or b"", []):
            link = records.link_of(node)
            assert link is not None  # (collected because it has one)
            seen = first.setdefault(link, (path, node))
            if seen[1] != node:
                self.problem(f"commit {c.repo}@{c.id}: {seen[0]} and {path} are names of one hard link but differ")

    def subvenance(self) -> None:
        for key, _ in self.db.scan(SUBVENANCE):
            up_repo, _, rest = key.partition(b"\0")
            up = CommitRef(up_repo.decode(), rest[:16].hex())
            down = split_commit_key(rest[16:])
            try:
                c = self.store.index.commit(down.repo, down.id)
            except PfsError:
                self.problem(f"provenance index names missing commit {down.repo}@{down.id}")
                continue
            if up not in c.provenance:
                self.problem(f"provenance index entry {up.repo}@{up.id} -> {down.repo}@{down.id} is stale")

    def dir(self, d: DirNode, where: str) -> None:
        for which, f in (("header", d.header), ("footer", d.footer)):
            if f is not None:
                self.file(f, f"{where} ({which})")
        if d.root is None:
            if d.size or d.count or d.subdirs:
                self.problem(
                    f"{where}: empty directory claims {d.size} bytes, {d.count} entries, {d.subdirs} subdirectories"
                )
            return
        got = self.page(d.root, where)
        if got is not None and got[:2] != (d.size, d.count):
            self.problem(
                f"{where}: directory claims {d.size} bytes in {d.count} entries, "
                f"its pages hold {got[0]} bytes in {got[1]}"
            )
        elif got is not None and None not in (d.subdirs, got[2]) and got[2] != d.subdirs:
            self.problem(f"{where}: directory claims {d.subdirs} subdirectories, its pages hold {got[2]}")

    def page(self, h: bytes, where: str) -> tuple[int, int, int | None] | None:
        """(bytes, entries, subdirectories) under a page, once its pages are checked."""
        if h in self.pages:
            return self.pages[h]
        self.pages[h] = None
        data = self.db.get("pages", h)
        if data is None:
            self.problem(f"{where}: tree page {h.hex()} is missing")
            return None
        if self.db.hash(data) != h:
            self.problem(f"{where}: tree page {h.hex()} does not hash to its address")
            return None
        try:
            page = records.decode(Page, data)
        except Exception:
            self.problem(f"{where}: tree page {h.hex()} cannot be decoded")
            return None
        result: tuple[int, int, int | None] | None
        if isinstance(page, Leaf):
            result, linked = self.leaf(page, where)
        else:
            result, linked = self.inner(page, where)
        if linked:
            self.linked[h] = linked
        self.pages[h] = result
        return result

    def leaf(self, page: Leaf, where: str) -> tuple[tuple[int, int, int | None], list[tuple[str, Node]]]:
        keys = [n for n, _ in page.entries]
        if keys != sorted(set(keys)):
            self.problem(f"{where}: a tree page's entries are not sorted and unique")
        size = subdirs = 0
        linked: list[tuple[str, Node]] = []
        for name, node in page.entries:
            path = f"{where.rstrip('/')}/{name}"
            if records.link_of(node) is not None:
                linked.append((name, node))
            if "/" in name:
                self.problem(f"{path}: a name with '/' in it")
            else:
                self.valid(names.path, name, path)
            if isinstance(node, SymlinkNode):
                self.valid(names.link_target, node.target, path)
            elif isinstance(node, SpecialNode):
                pass  # (no content: its fields were checked when the page was decoded)
            elif isinstance(node, DirNode):
                subdirs += 1
                self.dir(node, path)
                linked.extend((f"{name}/{p}", n) for p, n in self.linked.get(node.root or b"", []))
            elif isinstance(node, FileNode):
                self.file(node, path)
            size += node.size
        return (size, len(page.entries), subdirs), linked

    def inner(self, page: Inner, where: str) -> tuple[tuple[int, int, int | None], list[tuple[str, Node]]]:
        size = count = 0
        subdirs: int | None = 0
        linked: list[tuple[str, Node]] = []
        for _first, h, csize, ccount in page.children:
            got = self.page(h, where)
            if got is not None and got[:2] != (csize, ccount):
                self.problem(f"{where}: tree page {h.hex()} sizes do not add up")
            size += csize
            count += ccount
            below = None if got is None else got[2]
            subdirs = None if below is None or subdirs is None else subdirs + below
            linked.extend(self.linked.get(h, []))
        return (size, count, subdirs), linked

    def file(self, node: FileNode, where: str) -> None:
        if node.hash in self.files:
            return
        self.files.add(node.hash)
        try:
            chunks = tree.file_chunks(self.db, node)
        except Exception:
            self.problem(f"{where}: chunk list {node.hash.hex()} is missing or unreadable")
            return
        if self.db.hash(records.encode(tuple(chunks))) != node.hash:
            self.problem(f"{where}: chunk list does not hash to the file's hash")
        if sum(c.size for c in chunks) != node.size:
            self.problem(f"{where}: chunks hold {sum(c.size for c in chunks)} bytes, not {node.size}")
        for c in chunks:
            self.chunks.setdefault(c.hash, (c, where))

    def verify_chunks(self) -> None:
        for ref, where in self.chunks.values():
            try:
                self.store.read_chunk(ref)
            except PfsError as e:
                self.problem(f"{where}: {e}")


def check(store: EngineCore) -> list[str]:
    return _Checker(store).run()
