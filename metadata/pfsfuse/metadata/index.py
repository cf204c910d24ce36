"""Repos, branches and commits: their records, keys and the operations that change them.

Every operation runs under the index lock and writes one atomic batch (`Index.mutation`). Commit
ids are 32 hex digits whose first 12 are the start time in milliseconds, so a prefix scan of a repo
lists its commits in start order without a secondary index.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator

import msgspec

from pfsfuse.metadata import etags, names, records, refs
from pfsfuse.metadata.db import DB, Txn
from pfsfuse.metadata.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pfsfuse.metadata.records import EMPTY_DIR, Branch, BranchRef, Commit, CommitRef, DirNode, Repo

SUBVENANCE = "subvenance"  # upstream commit key + downstream commit key -> b""


def _repo_key(repo: str) -> bytes:
    return repo.encode() + b"\0"


def _branch_key(repo: str, name: str) -> bytes:
    return _repo_key(repo) + name.encode()


def commit_key(repo: str, cid: str) -> bytes:
    return _repo_key(repo) + bytes.fromhex(cid)


def split_commit_key(key: bytes) -> CommitRef:
    return CommitRef(key[:-17].decode(), key[-16:].hex())


class _Ids:
    """Commit ids that sort by start time, strictly increasing within this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last = 0

    def new(self) -> str:
        with self._lock:
            value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
            self._last = max(value, self._last + 1)
            return f"{self._last:032x}"


_ids = _Ids()
new_id = _ids.new  # time-ordered 32-hex-digit ids, also for jobs


class View:
    """Reads through to the index, with the writes of the current mutation applied on top."""

    def __init__(self, index: Index, txn: Txn):
        self.index = index
        self.txn = txn
        self._commits: dict[tuple[str, str], Commit | None] = {}
        self._branches: dict[tuple[str, str], Branch | None] = {}

    def commit(self, repo: str, cid: str) -> Commit:
        key = (repo, cid)
        if key in self._commits:
            c = self._commits[key]
            if c is None:
                raise NotFound(f"commit {cid} not found in repo {repo}")
            return c
        return self.index.commit(repo, cid)

    def put_commit(self, c: Commit) -> None:
        self._commits[(c.repo, c.id)] = c
        self.txn.put("commits", commit_key(c.repo, c.id), records.encode(c))

    def delete_commit(self, c: Commit) -> None:
        self._commits[(c.repo, c.id)] = None
        self.txn.delete("commits", commit_key(c.repo, c.id))
        for up in c.provenance:
            self.txn.delete(SUBVENANCE, commit_key(up.repo, up.id) + commit_key(c.repo, c.id))

    def branch(self, repo: str, name: str) -> Branch | None:
        key = (repo, name)
        if key in self._branches:
            return self._branches[key]
        return self.index.branch(repo, name)

    def branches(self, repo: str) -> list[Branch]:
        found: dict[str, Branch | None] = {b.name: b for b in self.index.branches(repo)}
        for (r, name), b in self._branches.items():
            if r == repo:
                found[name] = b
        return [b for _, b in sorted(found.items()) if b is not None]

    def put_branch(self, b: Branch) -> None:
        self._branches[(b.repo, b.name)] = b
        self.txn.put("branches", _branch_key(b.repo, b.name), records.encode(b))

    def delete_branch(self, b: Branch) -> None:
        self._branches[(b.repo, b.name)] = None
        self.txn.delete("branches", _branch_key(b.repo, b.name))


class Index:
    def __init__(self, db: DB):
        self.db = db

    @contextlib.contextmanager
    def mutation(self, sync: bool = True) -> Iterator[View]:
        """One atomic change: everything written through the view lands together or not at all.
        sync=False is for records nothing depends on until a later synced mutation."""
        with self.db.lock:
            txn = self.db.txn()
            yield View(self, txn)
            txn.commit(sync)

    # -- repos --------------------------------------------------------------------------------

    def repo(self, name: str) -> Repo:
        data = self.db.get("repos", names.repo_name(name).encode())
        if data is None:
            raise NotFound(f"repo {name} not found")
        return records.decode(Repo, data)

    def repos(self) -> list[Repo]:
        return [records.decode(Repo, v) for _, v in self.db.scan("repos")]

    def create_repo(self, name: str, description: str = "", update: bool = False) -> Repo:
        names.repo_name(name)
        with self.mutation() as v:
            data = self.db.get("repos", name.encode())
            if data is not None and not update:
                raise AlreadyExists(f"repo {name} already exists")
            if data is None and update:
                raise NotFound(f"repo {name} not found")
            repo = (
                Repo(name, time.time(), description)
                if data is None
                else Repo(name, records.decode(Repo, data).created, description)
            )
            v.txn.put("repos", name.encode(), records.encode(repo))
        return repo

    def delete_repo(self, name: str, force: bool = False) -> None:
        with self.mutation() as v:
            self.repo(name)
            dependents = sorted(
                {
                    f"{b.repo}@{b.name}"
                    for other in self.repos()
                    if other.name != name
                    for b in self.branches(other.name)
                    if any(p.repo == name for p in b.provenance)
                }
            )
            if dependents and not force:
                raise FailedPrecondition(
                    f"repo {name} is provenance of {', '.join(dependents)}; use -f to delete it anyway"
                )
            for dep in dependents:
                repo, _, branch = dep.partition("@")
                b = v.branch(repo, branch)
                if b is not None:
                    v.put_branch(Branch(b.repo, b.name, b.head, [p for p in b.provenance if p.repo != name]))
            # Downstream commits keep existing but lose their provenance on this repo.
            for key, _ in self.db.scan(SUBVENANCE, _repo_key(name)):
                down = split_commit_key(key[len(_repo_key(name)) + 16 :])
                if down.repo == name:
                    continue
                c = v.commit(down.repo, down.id)
                v.put_commit(_replace(c, provenance=[p for p in c.provenance if p.repo != name]))
                v.txn.delete(SUBVENANCE, key)
            for c in self.commits(name):
                v.delete_commit(c)
            for b in self.branches(name):
                v.delete_branch(b)
            etags.drop_repo(self.db, v.txn, name)
            v.txn.delete("repos", name.encode())

    # -- branches -----------------------------------------------------------------------------

    def branch(self, repo: str, name: str) -> Branch | None:
        data = self.db.get("branches", _branch_key(repo, name))
        return None if data is None else records.decode(Branch, data)

    def branches(self, repo: str) -> list[Branch]:
        return [records.decode(Branch, v) for _, v in self.db.scan("branches", _repo_key(repo))]

    def create_branch(
        self,
        repo: str,
        name: str,
        head: str | None = None,
        provenance: Iterable[BranchRef] | None = None,
    ) -> Branch:
        self.repo(repo)
        names.branch_name(name)
        with self.mutation() as v:
            old = v.branch(repo, name)
            head_id = self.resolve(repo, head).id if head else (old.head if old else None)
            if provenance is None:
                prov = old.provenance if old else []
            else:
                prov = sorted(set(provenance), key=lambda p: (p.repo, p.name))
                for p in prov:
                    self.repo(p.repo)
                    names.branch_name(p.name)
                    if v.branch(p.repo, p.name) is None:
                        v.put_branch(Branch(p.repo, p.name))
                self._check_acyclic(v, BranchRef(repo, name), prov)
            b = Branch(repo, name, head_id, prov)
            v.put_branch(b)
        return b

    def _check_acyclic(self, v: View, start: BranchRef, prov: list[BranchRef]) -> None:
        todo, seen = list(prov), set()
        while todo:
            p = todo.pop()
            if p == start:
                raise InvalidArgument(f"branch {start.repo}@{start.name} cannot be provenant on itself")
            if p in seen:
                continue
            seen.add(p)
            b = v.branch(p.repo, p.name)
            if b is not None:
                todo.extend(b.provenance)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        self.repo(repo)
        with self.mutation() as v:
            b = v.branch(repo, name)
            if b is None:
                raise NotFound(f"branch {name} not found in repo {repo}")
            me = BranchRef(repo, name)
            dependents = [o for r in self.repos() for o in v.branches(r.name) if me in o.provenance]
            if dependents and not force:
                raise FailedPrecondition(
                    f"branch {repo}@{name} is provenance of "
                    + ", ".join(f"{o.repo}@{o.name}" for o in dependents)
                    + "; use -f to delete it anyway"
                )
            for o in dependents:
                v.put_branch(_replace(o, provenance=[p for p in o.provenance if p != me]))
            v.delete_branch(b)

    # -- commits ------------------------------------------------------------------------------

    def commit(self, repo: str, cid: str) -> Commit:
        data = self.db.get("commits", commit_key(repo, cid))
        if data is None:
            raise NotFound(f"commit {cid} not found in repo {repo}")
        return records.decode(Commit, data)

    def commits(self, repo: str) -> Iterator[Commit]:
        """All commits of a repo, newest first."""
        for _, v in self.db.scan("commits", _repo_key(repo), reverse=True):
            yield records.decode(Commit, v)

    def resolve(self, repo: str, ref: str, view: View | None = None) -> Commit:
        """The commit a ref names in `repo` (a commit id or branch, then ancestry steps)."""
        self.repo(repo)
        src = view or self
        base, steps = refs.parse(ref)
        if refs.is_commit_id(base):
            c = src.commit(repo, base)
        else:
            b = src.branch(repo, base)
            if b is None:
                raise NotFound(f"branch {base} not found in repo {repo}")
            if b.head is None:
                raise NotFound(f"branch {base} in repo {repo} has no commits")
            c = src.commit(repo, b.head)
        for taken in range(steps):
            if c.parent is None:
                raise NotFound(f"{repo}@{ref}: the history has only {taken + 1} commit(s)")
            c = src.commit(repo, c.parent)
        return c

    def downstream(self, ref: CommitRef) -> list[CommitRef]:
        """Commits whose provenance names `ref` directly."""
        prefix = commit_key(ref.repo, ref.id)
        return [split_commit_key(k[len(prefix) :]) for k, _ in self.db.scan(SUBVENANCE, prefix)]

    def new_commit(
        self,
        v: View,
        repo: str,
        branch: str | None,
        parent: Commit | None,
        description: str = "",
        provenance: Iterable[CommitRef] = (),
        started: float | None = None,
    ) -> Commit:
        """Record a new open commit on top of `parent` and move `branch` to it (within `v`)."""
        if parent is not None and parent.finished is None:
            raise FailedPrecondition(f"parent commit {parent.id} in repo {repo} is still open; finish it first")
        prov = sorted(set(provenance), key=lambda p: (p.repo, p.id))
        c = Commit(
            repo=repo,
            id=_ids.new(),
            started=started if started is not None else time.time(),
            parent=parent.id if parent else None,
            branch=branch,
            description=description,
            tree=parent.tree if parent else EMPTY_DIR,
            provenance=prov,
        )
        v.put_commit(c)
        if parent is not None:
            v.put_commit(_replace(parent, children=[*parent.children, c.id]))
        for up in prov:
            v.txn.put(SUBVENANCE, commit_key(up.repo, up.id) + commit_key(repo, c.id), b"")
        if branch is not None:
            old = v.branch(repo, branch)
            v.put_branch(Branch(repo, branch, c.id, old.provenance if old else []))
        return c

    def start_commit(
        self,
        repo: str,
        branch: str | None = None,
        parent: str | None = None,
        description: str = "",
        provenance: Iterable[CommitRef] = (),
    ) -> Commit:
        self.repo(repo)
        if branch is not None:
            names.branch_name(branch)
        with self.mutation() as v:
            base: Commit | None
            if parent is not None:
                base = self.resolve(repo, parent, v)
            elif branch is not None:
                b = v.branch(repo, branch)
                base = v.commit(repo, b.head) if b and b.head else None
            else:
                base = None  # a commit on no branch, without parent (pipelines build outputs so)
            if branch is not None:
                b = v.branch(repo, branch)
                if b and b.head and v.commit(repo, b.head).finished is None:
                    raise FailedPrecondition(
                        f"branch {branch} in repo {repo} already has an open commit {b.head}; finish it first"
                    )
            for p in provenance:
                self.commit(p.repo, p.id)
            return self.new_commit(v, repo, branch, base, description, provenance)

    def finish_commit(self, repo: str, ref: str, description: str | None = None) -> Commit:
        with self.mutation() as v:
            c = self.resolve(repo, ref, v)
            if c.finished is not None:
                raise FailedPrecondition(f"commit {c.id} in repo {repo} is already finished")
            done = _replace(
                c,
                finished=time.time(),
                description=c.description if description is None else description,
            )
            v.put_commit(done)
        return done

    def delete_commit(self, repo: str, ref: str) -> list[CommitRef]:
        """Delete a commit and, recursively, the commits derived from it (returned)."""
        with self.mutation() as v:
            first = self.resolve(repo, ref, v)
            todo, deleted = [first.ref], []
            while todo:
                r = todo.pop()
                if r in deleted:
                    continue
                self._unlink(v, v.commit(r.repo, r.id))
                deleted.append(r)
                todo.extend(self.downstream(r))
        return deleted

    def _unlink(self, v: View, c: Commit) -> None:
        """Squash `c` out of history: children and branch heads move to its parent."""
        parent = v.commit(c.repo, c.parent) if c.parent else None
        for cid in c.children:
            v.put_commit(_replace(v.commit(c.repo, cid), parent=c.parent))
        if parent is not None:
            kids = [k for k in parent.children if k != c.id] + list(c.children)
            v.put_commit(_replace(parent, children=kids))
        for b in v.branches(c.repo):
            if b.head == c.id:
                v.put_branch(_replace(b, head=c.parent))
        v.delete_commit(c)

    def set_tree(self, v: View, c: Commit, tree: DirNode) -> Commit:
        """Replace the working tree of an open commit (within a mutation)."""
        if c.finished is not None:
            raise FailedPrecondition(f"commit {c.id} in repo {c.repo} is finished")
        updated = _replace(c, tree=tree)
        v.put_commit(updated)
        return updated

    def restore(self, repos: list[Repo], commits: list[Commit], branches: list[Branch]) -> None:
        """Write restored repos, commits and branches into this empty index, in one batch."""
        with self.mutation() as v:
            if self.repos():
                raise FailedPrecondition("the store is no longer empty: a repo was made meanwhile")
            for r in repos:
                v.txn.put("repos", r.name.encode(), records.encode(r))
            for c in commits:
                v.put_commit(c)
                for up in c.provenance:
                    v.txn.put(SUBVENANCE, commit_key(up.repo, up.id) + commit_key(c.repo, c.id), b"")
            for b in branches:
                v.put_branch(b)

    # -- chunk locations (opaque to this layer) -----------------------------------------------

    def chunk_location(self, h: bytes) -> bytes | None:
        return self.db.get("chunks", h)

    def chunks_indexed(self, hashes: list[bytes]) -> bool:
        return None not in self.db.get_many("chunks", hashes)

    def put_chunk_locations(self, locations: Iterable[tuple[bytes, bytes]]) -> None:
        """Index chunks. Unsynced: a lost location only loses dedup of a chunk nothing refers to
        yet, since the tree that will refer to it is written with a synced batch after this."""
        with self.mutation(sync=False) as v:
            for h, loc in locations:
                v.txn.put("chunks", h, loc)


def _replace(obj, **changes):
    return msgspec.structs.replace(obj, **changes)
