"""What the SDK accepts where it needs a commit or a file: `"repo@ref"`, `"repo@ref:path"`,
tuples, or the records the SDK returns. Checked here, before anything is sent."""

from __future__ import annotations

from typing import Protocol, cast

from pfsfuse.metadata import names
from pfsfuse.metadata import refs as ref_syntax
from pfsfuse.metadata.errors import InvalidArgument


class HasCommit(Protocol):
    """A commit record (`Commit`, `CommitRef`, an SDK `CommitContext`): a repo and an id."""

    repo: str
    id: str


CommitArg = str | tuple[str, str] | HasCommit
FileArg = str | tuple[str, str, str]

_REF = ref_syntax.WORD


def commit(value: CommitArg) -> tuple[str, str]:
    """(repo, ref) of `"repo@ref"`, `(repo, ref)` or a commit record."""
    if isinstance(value, str):
        m = _REF.fullmatch(value)
        if m is None or m["path"] is not None:
            raise InvalidArgument(f"{value!r}: expected a commit as 'repo@ref' (a branch, commit id or master^2)")
        return _checked(m["repo"], m["ref"])
    if isinstance(value, tuple) and len(value) == 2:
        return _checked(*value)
    if hasattr(value, "repo") and hasattr(value, "id"):
        return _checked(value.repo, value.id)
    raise InvalidArgument(f"{value!r}: expected a commit as 'repo@ref', (repo, ref) or a Commit")


def file(value: CommitArg | FileArg, path: str | None = None) -> tuple[str, str, str]:
    """(repo, ref, path) of `"repo@ref:path"` or `(repo, ref, path)`, or of a commit and `path`."""
    if path is not None:
        return (*commit(cast(CommitArg, value)), _path(path))  # commit() refuses a file's triple
    if isinstance(value, str):
        m = _REF.fullmatch(value)
        if m is None:
            raise InvalidArgument(f"{value!r}: expected a file as 'repo@ref:path'")
        return (*_checked(m["repo"], m["ref"]), _path(m["path"] or ""))
    if isinstance(value, tuple) and len(value) == 3:
        return (*_checked(value[0], value[1]), _path(value[2]))
    return (*commit(value), "")


def _checked(repo: str, ref: str) -> tuple[str, str]:
    ref_syntax.parse(ref)  # raises InvalidArgument naming the ref
    return names.repo_name(repo), ref


def _path(path: str) -> str:
    # Glob patterns pass as they are: the daemon expands them; '..' and NUL are refused here.
    return names.path(path)
