"""Intra-datum incrementality (`"incremental": true`): what a datum sees when it runs again.

A datum processed before sees under /pfs/<input> only the files added or changed since it was last
processed (for a split file: its new records, framed by the file's header and footer), and
/pfs/out starts with its previous output. An input with nothing new shows as an empty directory
(a directory input) or not at all (a file input). The input commits a datum was processed at are
kept beside its output (`<key>/inputs` in the meta repo).

A datum starts over (all of its files, an empty /pfs/out, as on its first run) when a file of it
was deleted since its last run, or that run's input commits are unknown or deleted: an online
computation cannot take back what it once added, so it is given the whole datum again.

The changed files are shown from commits of the meta repo made for the job: references to the
input's data (nothing is copied), at the same paths as in the input, one commit for each set of
datum paths that do not overlap. The job deletes them when it ends.
"""

from __future__ import annotations

import io

import msgspec

from pfsfuse.api.client import Client
from pfsfuse.api.types import Copy, Mkdir, Put, WriteOp
from pfsfuse.metadata.errors import NotFound
from pfsfuse.metadata.records import DirNode, FileNode, Node
from pfsfuse.scheduler.records import DatumInput, DatumTask

INPUTS = "inputs"  # <key>/inputs: [[name, repo, commit, path], ...] of the datum's last run


class _Seen(msgspec.Struct, array_like=True, frozen=True):
    name: str
    repo: str
    commit: str
    path: str


def record(key: str, inputs: list[DatumInput]) -> Put:
    """The write that records, beside a datum's output, which input commits it was run at."""
    return _put(f"{key}/{INPUTS}", msgspec.json.encode([_Seen(i.name, i.repo, i.commit, i.path) for i in inputs]))


def _put(path: str, data: bytes, **kw) -> Put:
    return Put(path, stream=io.BytesIO(data), **kw)


class Deltas:
    """The job's commits of changed inputs, made as datums are planned and written by `write`."""

    def __init__(self, client: Client, meta_repo: str, description: str):
        self.client = client
        self.repo = meta_repo
        self.description = description
        self._slots: list[tuple[str, list[str], list[WriteOp]]] = []  # (commit, paths taken, ops)
        self._frames: dict[tuple[str, str, str, str], list[WriteOp]] = {}

    @property
    def commits(self) -> list[str]:
        return [c for c, _, _ in self._slots]

    def plan(self, task: DatumTask, previous_meta: str) -> DatumTask:
        """The task as it runs again: its changed inputs shown and its previous output in
        /pfs/out, or started over."""
        last = self._last_run(previous_meta, task.key)
        if last is None:
            return task
        shown = []
        for inp in task.inputs:
            was = last.get(inp.name)
            if was is None or (was.repo, was.path) != (inp.repo, inp.path):
                return task
            changed = self._changed(inp, was.commit)
            if changed is None:
                return task  # something was deleted
            if not changed and not isinstance(inp.node, DirNode):
                continue  # an unchanged file: not shown
            shown.append(self._show(inp, changed))
        return msgspec.structs.replace(task, previous=previous_meta, shown=shown)

    def write(self) -> list[str]:
        """Write and finish the commits; returns their ids."""
        for commit, _, ops in self._slots:
            if ops:
                self.client.write_files(self.repo, commit, ops)
            self.client.finish_commit(self.repo, commit)
        return self.commits

    def _last_run(self, meta: str, key: str) -> dict[str, _Seen] | None:
        try:
            data = b"".join(self.client.get_file(self.repo, meta, f"{key}/{INPUTS}"))
            return {s.name: s for s in msgspec.json.decode(data, type=list[_Seen])}
        except (NotFound, msgspec.DecodeError):
            return None  # processed by a version that did not record it

    def _changed(self, inp: DatumInput, old_commit: str) -> list[str] | None:
        """The files of the input added or changed since `old_commit`; None if one was deleted."""
        if old_commit == inp.commit:
            return []
        try:
            d = self.client.diff_file(inp.repo, inp.commit, inp.path, inp.repo, old_commit, inp.path)
        except NotFound:
            return None  # the old commit is gone
        new = [f.path for f in d.new]
        if {f.path for f in d.old} - set(new):
            return None
        return new

    def _show(self, inp: DatumInput, changed: list[str]) -> DatumInput:
        commit, ops = self._slot(inp.path)
        if isinstance(inp.node, DirNode) and inp.path:
            ops.append(Mkdir(inp.path))
        # Frames before files: a frame put after files go into a directory made in the same write
        # loses them.
        for directory in dict.fromkeys(path.rpartition("/")[0] for path in changed):
            ops.extend(self._frame(commit, inp.repo, inp.commit, directory))
        ops.extend(Copy(path, inp.repo, inp.commit, path) for path in changed)
        return msgspec.structs.replace(inp, repo=self.repo, commit=commit)

    def _slot(self, path: str) -> tuple[str, list[WriteOp]]:
        """A commit where `path` overlaps no path shown from it yet."""
        for commit, paths, ops in self._slots:
            if not any(_overlap(path, p) for p in paths):
                paths.append(path)
                return commit, ops
        commit = self.client.start_commit(self.repo, None, None, self.description).id
        self._slots.append((commit, [path], []))
        return commit, self._slots[-1][2]

    def _frame(self, slot: str, repo: str, commit: str, directory: str) -> list[WriteOp]:
        """The header and footer of a directory (a split file), the first time it shows in `slot`."""
        if (slot, repo, commit, directory) in self._frames:
            return []
        node = self._lookup(repo, commit, directory)
        ops: list[WriteOp] = []
        for kind in ("header", "footer"):
            part = getattr(node, kind, None) if isinstance(node, DirNode) else None
            if part is not None:
                ops.append(_put(directory, self._read(part), frame=kind))
        self._frames[(slot, repo, commit, directory)] = ops
        return ops

    def _lookup(self, repo: str, commit: str, path: str) -> Node | None:
        node: Node | None = self.client.inspect_commit(repo, commit).tree
        for name in filter(None, path.split("/")):
            if not isinstance(node, DirNode) or node.root is None:
                return None
            node = self.client.dir_child(node.root, name)
        return node

    def _read(self, f: FileNode) -> bytes:
        chunks = f.chunks if f.chunks is not None else self.client.chunk_list(f.hash)
        return b"".join(self.client.read_chunk(c) for c in chunks)


def _overlap(a: str, b: str) -> bool:
    return not a or not b or a == b or a.startswith(b + "/") or b.startswith(a + "/")
