"""put-file -r's change detection: the entries of a local tree that the branch already holds as
they are, found by their size, mode, owners and times (as git's index and DVC do), not by reading
them. A file rewritten with the same size and the same times is taken as unchanged: the trade-off
git and rsync make; `put-file --checksum` reads every file instead."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pfsfuse.api.client import Client
from pfsfuse.api.types import FileInfo, Mkdir, Put, Symlink, WriteOp
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import NotFound, PfsError
from pfsfuse.metadata.records import Stat

PAGE = 10_000  # entries of the branch's tree asked for at a time

_Key = tuple  # what must match: the kind, the size or link target, then the stat


def _key(kind: str, what: object, st: Stat | None) -> _Key | None:
    if st is None:
        return None
    return (kind, what, st.mode, st.uid, st.gid, st.mtime, st.ctime)


def _held(info: FileInfo) -> _Key | None:
    if info.mtime is None or info.mode is None:
        return None  # written without a stat: nothing to compare with
    what = info.size if info.type == "file" else info.target if info.type == "symlink" else None
    st = Stat(info.mode, info.uid or 0, info.gid or 0, info.mtime, info.ctime or 0)
    return _key(info.type, what, st)


def held_under(client: Client, repo: str, ref: str, dest: str) -> dict[str, _Key]:
    """What `ref` holds at and under `dest`, by path, read a page at a time; nothing when the
    branch has no commit or no such path yet."""
    out: dict[str, _Key] = {}
    after: str | None = None
    try:
        while page := client.walk_file(repo, ref, dest, after, PAGE):
            for info in page:
                key = _held(info)
                if key is not None:
                    out[info.path] = key
            after = page[-1].path
    except NotFound:
        return {}
    return out


def skip_unchanged(ops: Iterable[WriteOp], held: dict[str, _Key], sizes: dict[str, int]) -> Iterator[WriteOp]:
    """`ops` (a bottom-up walk: a directory's entries before it) without those that would
    change nothing: files (by the sizes of their local paths), symlinks and directories the branch
    holds with the same stat. A directory is kept when anything below it is."""
    kept_below: set[str] = set()
    for op in ops:
        try:
            path = names.path(op.path)
        except PfsError:
            yield op  # the daemon says what is wrong with it
            continue
        wanted: _Key | None = None
        if isinstance(op, Put) and op.local is not None and op.stat is not None and op.local in sizes:
            wanted = _key("file", sizes[op.local], op.stat)
        elif isinstance(op, Symlink):
            wanted = _key("symlink", op.target, op.stat)
        elif isinstance(op, Mkdir) and path not in kept_below:
            wanted = _key("dir", None, op.stat)
        if wanted is not None and held.get(path) == wanted:
            continue
        parent = path
        while parent:
            parent = names.split(parent)[0]
            if parent in kept_below:
                break
            kept_below.add(parent)
        yield op
