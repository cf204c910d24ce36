"""Cutting a job's input commits into datums: glob per atom input, then cross and union products.

A datum's key is a hash of the pipeline's salt and of each input's name, matched path and content
hash, so a datum whose inputs did not change keeps its key and its earlier output is reused. A
directory's content hash covers its entries' names and contents, not their stats (a touched file
below it is the same datum). An
incremental pipeline keys datums by name and path only (the content hash then decides whether the
datum changed), so that a changed datum finds its previous output.
"""

from __future__ import annotations

import itertools

import xxhash

from pfsfuse.api.client import Client
from pfsfuse.metadata import glob
from pfsfuse.metadata.records import Commit, DirNode, FileNode, Node, SpecialNode, SymlinkNode
from pfsfuse.scheduler.records import DatumInput
from pfsfuse.scheduler.spec import Input, PipelineSpec, atom, cron_repo, input_name

FEW_DIRS = 64
_IDENTITIES = 4096  # directories' identities remembered, by top page (pages never change)
_identities: dict[bytes, bytes] = {}


def content(node: Node) -> bytes:
    if isinstance(node, FileNode):
        return node.hash
    if isinstance(node, DirNode):
        return node.root or b""
    if isinstance(node, SymlinkNode):
        return node.target.encode()
    return b""


def _entry(node: Node) -> bytes:
    """What an entry below a directory datum adds to its identity: its content and kind, not its
    stat (a directory's pages hold its entries' stats, so its own content is its frame)."""
    if isinstance(node, DirNode):
        return b"d" + b"".join(b"" if f is None else f.hash for f in (node.header, node.footer))
    if isinstance(node, SpecialNode):
        return f"s{node.kind}{node.rdev}".encode()
    return (b"l" if isinstance(node, SymlinkNode) else b"f") + content(node)


def identity(client: Client, repo: str, commit: str, path: str, node: DirNode) -> bytes:
    """The content identity of the directory `node` at `path`: every entry below it, by name
    and content. Worked out once per top page (a walk of the directory's tree)."""
    if node.root is None or glob.is_pattern(path):
        return _entry(node) + (node.root or b"")  # (a name that is a pattern: its pages' hash)
    found = _identities.get(node.root)
    if found is None:
        h = xxhash.xxh3_128()
        below = sorted(client.glob_nodes(repo, commit, f"/{path}/**" if path else "/**"))
        for p, n in below:
            h.update(p[len(path) :].encode() + b"\0" + _entry(n) + b"\0")
        found = h.digest()
        if len(_identities) >= _IDENTITIES:
            _identities.clear()
        _identities[node.root] = found
    return _entry(node) + found


def _content(i: DatumInput) -> bytes:
    return i.identity or content(i.node)


def key(salt: str, inputs: list[DatumInput], with_content: bool = True) -> str:
    h = xxhash.xxh3_128(salt.encode())
    for i in sorted(inputs, key=lambda i: (i.name, i.path)):
        h.update(b"\0" + i.name.encode() + b"\0" + i.path.encode() + b"\0")
        if with_content:
            h.update(_content(i))
    return h.hexdigest()


def fingerprint(inputs: list[DatumInput]) -> str:
    """The content of a datum's inputs, for incremental pipelines."""
    h = xxhash.xxh3_128()
    for i in sorted(inputs, key=lambda i: (i.name, i.path)):
        h.update(i.name.encode() + b"\0" + i.path.encode() + b"\0" + _content(i))
    return h.hexdigest()


def datums(client: Client, spec: PipelineSpec, heads: dict[tuple[str, str], Commit | None]) -> list[list[DatumInput]]:
    """The datums of `spec.input` over the input commits `heads` ((repo, branch) -> commit)."""
    return _datums(client, spec.input, spec.name, heads)


def _datums(client: Client, i: Input, pipeline: str, heads) -> list[list[DatumInput]]:
    a = atom(i)
    if a is not None:
        return _glob(client, a.repo, heads.get((a.repo, a.branch)), a.glob, input_name(a), a.lazy, a.empty_files)
    if i.cron is not None:
        return _glob(
            client,
            cron_repo(i.cron, pipeline),
            heads.get((cron_repo(i.cron, pipeline), "master")),
            "/",
            i.cron.name,
            False,
            False,
        )
    if i.union is not None:
        return [d for sub in i.union for d in _datums(client, sub, pipeline, heads)]
    parts = [_datums(client, sub, pipeline, heads) for sub in i.cross or ()]
    return [[x for d in combo for x in d] for combo in itertools.product(*parts)]


def _glob(client: Client, repo: str, commit: Commit | None, pattern: str, name: str, lazy: bool, empty: bool):
    if commit is None:
        return []
    matches = client.glob_nodes(repo, commit.id, pattern)
    framed = _framed_dirs(client, repo, commit.id, {_dir(p) for p, n in matches if isinstance(n, FileNode)})
    return [
        [
            DatumInput(
                name,
                repo,
                commit.id,
                path,
                node,
                lazy,
                empty,
                _dir(path) in framed,
                identity(client, repo, commit.id, path, node) if isinstance(node, DirNode) else b"",
            )
        ]
        for path, node in matches
    ]


def _framed_dirs(client: Client, repo: str, commit: str, dirs: set[str]) -> set[str]:
    """Which of `dirs` may have a header or footer (split files: a worker reads their files
    framed by them). Asked of a few directories; beyond that, assumed of all."""
    if len(dirs) > FEW_DIRS:
        return dirs
    framed = {d for d in dirs if glob.is_pattern(d)}  # a name that is not its own pattern: unknown
    for d in dirs - framed:
        for _, node in client.glob_nodes(repo, commit, "/" + d):
            if not isinstance(node, DirNode) or node.header is not None or node.footer is not None:
                framed.add(d)
    return framed


def _dir(path: str) -> str:
    return path.rpartition("/")[0]
