"""Reading files: their contents (with a split file's header and footer), listings, history,
globs and diffs, and the immutable objects clients fetch by hash (directory pages, chunk lists,
chunk locations)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator

import msgspec

from pfsfuse.api.types import NAMES_MAX, PLANS_CHUNKS, PLANS_PAGE, DiffResult, DirNames, FileInfo, ReadPlan
from pfsfuse.engine.core import EngineCore
from pfsfuse.metadata import etags, glob, names, records, tree
from pfsfuse.metadata.errors import InvalidArgument, NotFound
from pfsfuse.metadata.records import (
    ChunkRef,
    Commit,
    DirNode,
    FileNode,
    Leaf,
    Node,
    Page,
    SpecialNode,
    SymlinkNode,
    node_type,
)

_READ_BATCH = 1024  # chunks located at a time when reading many files
_LEAVES_AT_ONCE = 64  # tree leaves a plain listing reads in one multi-get


def file_info(path: str, node: Node) -> FileInfo:
    if isinstance(node, DirNode):
        info = FileInfo(path, "dir", node.size, node.root.hex() if node.root else "", children=node.count)
    elif isinstance(node, SymlinkNode):
        info = FileInfo(path, "symlink", node.size, target=node.target)
    elif isinstance(node, SpecialNode):
        info = FileInfo(path, node.kind, rdev=node.rdev)
    else:
        info = FileInfo(path, "file", node.size, node.hash.hex(), executable=node.executable)
    st = node.stat
    if st is not None:
        info.mode, info.uid, info.gid, info.mtime, info.ctime = st.mode, st.uid, st.gid, st.mtime, st.ctime
        info.atime, info.link, info.nlink = st.atime, st.link, st.nlink
        if st.xattrs:
            info.xattrs = dict(st.xattrs)
    return info


class Reads(EngineCore):
    def _node(self, repo: str, ref: str, path: str) -> Node:
        c = self.index.resolve(repo, ref)
        path = names.path(path)
        node = tree.lookup(self.db, c.tree, path) if path else c.tree
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        return node

    def _content(self, repo: str, ref: str, path: str) -> tuple[FileInfo | None, Iterable[ChunkRef], int | None]:
        """What get-file of `path` reads: (the file or directory, its chunks, their size), or
        for a glob pattern (None, the chunks as they are found, None)."""
        c = self.index.resolve(repo, ref)
        path = names.path(path)
        where = f"{repo}@{ref}:{path or '/'}"
        parent: DirNode = c.tree
        node: Node | None = c.tree
        if path:
            parent_path, name = names.split(path)
            found = tree.lookup(self.db, c.tree, parent_path) if parent_path else c.tree
            node = None
            if isinstance(found, DirNode):
                parent, node = found, tree.child(self.db, found, name)
        if node is None and glob.is_pattern(path):
            return None, self._glob_chunks(c.tree, path), None
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        if isinstance(node, SymlinkNode):
            raise InvalidArgument(f"{where} is a symlink to {node.target}")
        if isinstance(node, SpecialNode):
            raise InvalidArgument(f"{where} is a {node.kind}: it has no content")
        if isinstance(node, DirNode):
            if not node.framed:
                raise InvalidArgument(f"{where} is a directory; use -r")
            chunks = tree.framed_chunks(self.db, node)
        else:
            chunks = tree.framed_chunks(self.db, parent, tree.file_chunks(self.db, node))
        return file_info(path, node), chunks, sum(r.size for r in chunks)

    def _glob_chunks(self, root: DirNode, pattern: str) -> Iterator[ChunkRef]:
        """The chunks of the files matching `pattern`, in path order, with each directory's
        header before and footer after each run of its files."""
        group: str | None = None
        parent: DirNode | None = None
        for path, node in glob.glob(self.db, root, pattern):
            if not isinstance(node, FileNode):
                continue
            parent_path = names.split(path)[0]
            if parent_path != group:
                if parent is not None and parent.footer is not None:
                    yield from tree.file_chunks(self.db, parent.footer)
                group = parent_path
                found = tree.lookup(self.db, root, parent_path) if parent_path else root
                parent = found if isinstance(found, DirNode) else None
                if parent is not None and parent.header is not None:
                    yield from tree.file_chunks(self.db, parent.header)
            yield from tree.file_chunks(self.db, node)
        if parent is not None and parent.footer is not None:
            yield from tree.file_chunks(self.db, parent.footer)

    def _read_many(self, refs: Iterable[ChunkRef], offset: int, length: int | None) -> Iterator[bytes]:
        """`read_chunks` over a stream of chunks, located a batch at a time."""
        end = None if length is None else offset + length
        pos = 0
        it = iter(refs)
        while batch := list(itertools.islice(it, _READ_BATCH)):
            size = sum(r.size for r in batch)
            lo, hi = max(offset - pos, 0), size if end is None else min(end - pos, size)
            if hi > lo:
                yield from self.read_chunks(batch, lo, hi - lo)
            pos += size
            if end is not None and pos >= end:
                return

    def read(
        self, repo: str, ref: str, path: str, offset: int = 0, length: int | None = None
    ) -> tuple[int | None, Iterator[bytes]]:
        """get_file, with the number of bytes it yields when known before reading (the server
        sends it as the content length)."""
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument("offset and length must not be negative")
        _, chunks, size = self._content(repo, ref, path)
        if size is not None:
            size = max(0, size - offset)
            if length is not None:
                size = min(size, length)
        return size, self._read_many(chunks, offset, length)

    def get_file(self, repo: str, ref: str, path: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.read(repo, ref, path, offset, length)[1]

    def read_plan(self, repo: str, ref: str, path: str) -> ReadPlan:
        info, chunks, _ = self._content(repo, ref, path)
        if info is None:
            raise InvalidArgument(f"{path}: read plans are for files, not glob patterns")
        return ReadPlan(info, [(r, self.location(r.hash)) for r in chunks])

    def read_plans(
        self, repo: str, ref: str, path: str = "", start_after: str | None = None, limit: int | None = None
    ) -> list[ReadPlan]:
        path = names.path(path)
        limit = PLANS_PAGE if limit is None else min(limit, PLANS_PAGE)
        root = self.index.resolve(repo, ref).tree
        node = tree.lookup(self.db, root, path) if path else root
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        found: Iterable[tuple[str, Node, DirNode | None]] = ()
        if start_after is None:
            parent = tree.lookup(self.db, root, names.split(path)[0]) if path else None
            found = [(path, node, parent if isinstance(parent, DirNode) else None)]
        if isinstance(node, DirNode):
            found = itertools.chain(found, tree.walk_after(self.db, node, path, self._after(path, start_after)))
        plans: list[tuple[str, Node, list[ChunkRef]]] = []
        located = 0
        # A page ends at `limit` entries or, for files of many chunks, PLANS_CHUNKS chunks.
        for p, n, parent in found:
            if len(plans) == limit or located >= PLANS_CHUNKS:
                break
            chunks: list[ChunkRef] = []
            if isinstance(n, FileNode) and isinstance(parent, DirNode):
                chunks = tree.framed_chunks(self.db, parent, tree.file_chunks(self.db, n))
            plans.append((p, n, chunks))
            located += len(chunks)
        locs = iter(self.chunk_locations([r.hash for _, _, chunks in plans for r in chunks]))
        return [ReadPlan(file_info(p, n), [(r, next(locs)) for r in chunks]) for p, n, chunks in plans]

    @staticmethod
    def _after(path: str, start_after: str | None) -> str | None:
        """`start_after`, a path under directory `path`, relative to it."""
        if start_after is None:
            return None
        after = names.path(start_after)
        if path and not after.startswith(path + "/"):
            raise InvalidArgument(f"start_after {start_after!r} is not under {path!r}")
        return after[len(path) + 1 :] if path else after

    def plan_bytes(
        self, repo: str, ref: str, plan: ReadPlan, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        if offset or length is not None:
            return self.get_file(repo, ref, plan.info.path, offset, length)
        return self.read_chunks([r for r, _ in plan.chunks])

    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo:
        return file_info(names.path(path), self._node(repo, ref, path))

    def list_file(
        self,
        repo: str,
        ref: str,
        path: str = "",
        start_after: str | None = None,
        limit: int | None = None,
        history: int = 0,
    ) -> list[FileInfo]:
        if history < -1:
            raise InvalidArgument(f"history {history}: give a number of versions, or -1 for all")
        path = names.path(path)
        c = self.index.resolve(repo, ref)
        node = tree.lookup(self.db, c.tree, path) if path else c.tree
        if node is None:
            raise NotFound(f"path {path} not found in {repo}@{ref}")
        found: list[tuple[str, Node]]
        if not isinstance(node, DirNode):
            found = [(path, node)]
        else:
            entries = tree.list_dir(self.db, node, start_after)
            found = [(names.join(path, n), child) for n, child in itertools.islice(entries, limit)]
        if not history:
            return [file_info(p, n) for p, n in found]
        return self._history(repo, c, found, history)

    def _history(self, repo: str, c: Commit, found: list[tuple[str, Node]], limit: int) -> list[FileInfo]:
        """Each path's versions, newest first, back through the ancestors of `c` until the path
        is missing or `limit` versions are found (-1: no limit). A version is reported with the
        oldest commit in the run of commits that hold it, the one that wrote it."""
        versions: dict[str, list[tuple[Node, str]]] = {p: [(n, c.id)] for p, n in found}
        active = set(versions)
        newer = c
        for older in self.ancestry(repo, self.index.commit(repo, c.parent) if c.parent else None):
            if not active:
                break
            same_tree = older.tree == newer.tree
            for p in list(active):
                run = versions[p]
                node = run[-1][0] if same_tree else tree.lookup(self.db, older.tree, p)
                if node == run[-1][0]:
                    run[-1] = (run[-1][0], older.id)
                elif node is None or len(run) == limit:
                    active.discard(p)
                else:
                    run.append((node, older.id))
            newer = older
        return [msgspec.structs.replace(file_info(p, n), commit=cid) for p, _ in found for n, cid in versions[p]]

    def walk_file(
        self, repo: str, ref: str, path: str = "", start_after: str | None = None, limit: int | None = None
    ) -> list[FileInfo]:
        path = names.path(path)
        node = self._node(repo, ref, path)
        found: Iterable[tuple[str, Node]] = [(path, node)] if start_after is None else []
        if isinstance(node, DirNode):
            found = itertools.chain(
                found, ((p, n) for p, n, _ in tree.walk_after(self.db, node, path, self._after(path, start_after)))
            )
        return [file_info(p, n) for p, n in itertools.islice(found, limit)]

    def glob_file(self, repo: str, ref: str, pattern: str) -> list[FileInfo]:
        return [file_info(p, n) for p, n in self.glob_nodes(repo, ref, pattern)]

    def glob_nodes(self, repo: str, ref: str, pattern: str) -> list[tuple[str, Node]]:
        c = self.index.resolve(repo, ref)
        return list(glob.glob(self.db, c.tree, pattern))

    def etags(self, repo: str, hashes: list[str]) -> list[str]:
        self.index.repo(repo)
        try:
            keys = [bytes.fromhex(h) for h in hashes]
        except ValueError:
            raise InvalidArgument("a content hash is 32 hex digits") from None
        return etags.lookup(self.db, repo, keys)

    def diff_file(
        self,
        new_repo: str,
        new_ref: str,
        new_path: str = "",
        old_repo: str | None = None,
        old_ref: str | None = None,
        old_path: str | None = None,
        shallow: bool = False,
    ) -> DiffResult:
        new_path = names.path(new_path)
        new_commit = self.index.resolve(new_repo, new_ref)
        old_repo = old_repo or new_repo
        old_path = new_path if old_path is None else names.path(old_path)
        if old_ref is None:
            old_commit = self.index.commit(new_repo, new_commit.parent) if new_commit.parent else None
        else:
            old_commit = self.index.resolve(old_repo, old_ref)

        def at(c: Commit | None, path: str) -> Node | None:
            if c is None:
                return None
            return tree.lookup(self.db, c.tree, path) if path else c.tree

        new, old = at(new_commit, new_path), at(old_commit, old_path)
        result = DiffResult([], [])
        if isinstance(new, DirNode) and isinstance(old, DirNode):
            if shallow:
                newer, older = dict(tree.list_dir(self.db, new)), dict(tree.list_dir(self.db, old))
                for name in sorted(newer.keys() | older.keys()):
                    if not tree.same_content(newer.get(name), older.get(name)):
                        if name in newer:
                            result.new.append(file_info(names.join(new_path, name), newer[name]))
                        if name in older:
                            result.old.append(file_info(names.join(old_path, name), older[name]))
                return result
            for path, n, o in tree.diff(self.db, new, old):
                if n is not None:
                    result.new.append(file_info(names.join(new_path, path), n))
                if o is not None:
                    result.old.append(file_info(names.join(old_path, path), o))
        elif not tree.same_content(new, old):
            result.new.extend(self._files_under(new_path, new))
            result.old.extend(self._files_under(old_path, old))
        return result

    def _files_under(self, path: str, node: Node | None) -> list[FileInfo]:
        if node is None:
            return []
        if not isinstance(node, DirNode):
            return [file_info(path, node)]
        return [file_info(p, n) for p, n in tree.walk(self.db, node, path) if not isinstance(n, DirNode)]

    # -- immutable objects by hash ---------------------------------------------------------------

    def dir_entries(
        self, root: bytes, start_after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Node]]:
        d = DirNode(root=root)
        return list(itertools.islice(tree.list_dir(self.db, d, start_after), limit))

    def dir_names(self, root: bytes, start_after: str | None = None, limit: int = NAMES_MAX) -> DirNames:
        # The leaves are read many at once and decoded here, not through the page cache: a big
        # listing would only push out of it what lookups use, and it costs a cache entry apiece.
        out = DirNames([], [], [], [], [])
        leaves = tree.leaf_hashes(self.db, DirNode(root=root), start_after)
        while len(out.names) < limit and (batch := list(itertools.islice(leaves, _LEAVES_AT_ONCE))):
            for data in self.db.stored_pages(batch):
                leaf = records.decode(Page, data)
                assert isinstance(leaf, Leaf)
                entries = leaf.entries
                if start_after is not None and entries and entries[0][0] <= start_after:
                    entries = entries[bisect.bisect_right(entries, start_after, key=lambda e: e[0]) :]
                _add_names(out, entries[: limit - len(out.names)])
                if len(out.names) == limit:
                    break
        return out

    def dir_child(self, root: bytes, name: str) -> Node | None:
        return tree.child(self.db, DirNode(root=root), name)

    def tree_pages(self, hashes: list[bytes]) -> list[Page]:
        out = []
        for h in hashes:
            try:
                out.append(self.db.page(h))
            except ValueError:  # the hash of a chunk list, not of a page
                raise NotFound(f"no tree page {h.hex()}") from None
        return out

    def stored_tree_pages(self, hashes: list[bytes]) -> list[msgspec.Raw]:
        """`tree_pages` as stored, for a caller that takes msgpack: the daemon sends them as
        they are, without decoding and encoding them again."""
        try:
            return [msgspec.Raw(records.body(d)) for d in self.db.stored_pages(hashes)]
        except ValueError as e:
            raise NotFound(f"no tree page: {e}") from None

    def chunk_list(self, file_hash: bytes) -> list[ChunkRef]:
        return list(tree.file_chunks(self.db, FileNode(0, file_hash, None)))


def _add_names(out: DirNames, entries: list[tuple[str, Node]]) -> None:
    """Add a leaf's entries to a plain listing (a pass a field: this is most of dir_names)."""
    nodes = [node for _, node in entries]
    ones = [n.chunks[0] if type(n) is FileNode and n.chunks is not None and len(n.chunks) == 1 else None for n in nodes]
    out.names.extend([name for name, _ in entries])
    out.types.extend([node_type(n) for n in nodes])
    out.links.extend([(n.stat.link or 0) if n.stat is not None else 0 for n in nodes])
    out.chunks.extend([b"" if c is None else c.hash for c in ones])
    out.sizes.extend([0 if c is None else c.size for c in ones])
