"""Validation of every name and path at the boundary: repos, branches, commit ids, file paths."""

from __future__ import annotations

import re

from pfsfuse.metadata.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")
COMMIT_ID = re.compile(r"[0-9a-f]{32}")
MAX_COMPONENT = 255
MAX_PATH = 4096


def repo_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid repo name {name!r}: use 1-63 letters, digits, '_' or '-'"
        )
    return name


def branch_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid branch name {name!r}: use 1-63 letters, digits, '_' or '-'"
        )
    if COMMIT_ID.fullmatch(name):
        raise InvalidArgument(f"invalid branch name {name!r}: it looks like a commit id")
    return name


def path(p: str) -> str:
    """The canonical form of a file path: no leading or trailing '/', '' for the root.

    Rejects what could escape or alias a path: '..', '.', empty components, NUL.
    """
    if not isinstance(p, str):
        raise InvalidArgument(f"invalid path {p!r}")
    if "\0" in p:
        raise InvalidArgument(f"invalid path {p!r}: contains a NUL byte")
    if len(p.encode()) > MAX_PATH:
        raise InvalidArgument(f"invalid path {p[:40]!r}...: longer than {MAX_PATH} bytes")
    stripped = p.strip("/") if p not in ("", "/") else ""
    if not stripped:
        return ""
    for part in stripped.split("/"):
        if part in ("", ".", ".."):
            what = "an empty component" if part == "" else f"a {part!r} component"
            raise InvalidArgument(f"invalid path {p!r}: contains {what}")
        if len(part.encode()) > MAX_COMPONENT:
            raise InvalidArgument(f"invalid path {p!r}: a component is longer than 255 bytes")
    return stripped


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def split(p: str) -> tuple[str, str]:
    """('a/b', 'c') for 'a/b/c'; ('', 'c') for 'c'."""
    head, _, tail = p.rpartition("/")
    return head, tail
