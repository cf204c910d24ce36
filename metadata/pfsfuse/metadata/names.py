"""Validation of every name and path at the boundary: repos, branches, commit ids, file paths."""

from __future__ import annotations

import re

from pfsfuse.metadata.errors import InvalidArgument, NameTooLong

_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")
COMMIT_ID = re.compile(r"[0-9a-f]{32}")
MAX_COMPONENT = 255
MAX_PATH = 4096
MAX_TARGET = 4095  # a symlink's target, as on Linux (PATH_MAX less its NUL)
XATTR_PREFIX = "user."  # the extended attributes an entry keeps: users', as on a disk
XATTR_OWN_PREFIX = "user.pfs."  # the mount's own, which describe an entry and are never stored
XATTR_VALUE_MAX = 65536  # bytes of one value (Linux's XATTR_SIZE_MAX)
XATTRS_MAX = 65536  # bytes of one entry's names and values together (ext4 keeps about 4 KiB)


def repo_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid repo name {name!r}: use 1-63 letters, digits, '_' or '-'")
    return name


def branch_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid branch name {name!r}: use 1-63 letters, digits, '_' or '-'")
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
    if byte_length(p) > MAX_PATH:
        raise NameTooLong(f"invalid path {p[:40]!r}...: longer than {MAX_PATH} bytes")
    stripped = p.strip("/") if p not in ("", "/") else ""
    if not stripped:
        return ""
    for part in stripped.split("/"):
        if part in ("", ".", ".."):
            what = "an empty component" if part == "" else f"a {part!r} component"
            raise InvalidArgument(f"invalid path {p!r}: contains {what}")
        if len(part.encode()) > MAX_COMPONENT:
            raise NameTooLong(f"invalid path {p!r}: a component is longer than {MAX_COMPONENT} bytes")
    return stripped


def byte_length(text: str) -> int:
    """The length of `text` in UTF-8; text that has none (a lone surrogate) is invalid."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"invalid name {text[:40]!r}: not valid UTF-8") from None


def link_target(target: str) -> str:
    """A symlink's target: any text but empty or with a NUL, at most MAX_TARGET bytes."""
    if not isinstance(target, str) or not target:
        raise InvalidArgument("invalid symlink target: it is empty")
    if "\0" in target:
        raise InvalidArgument(f"invalid symlink target {target[:40]!r}: contains a NUL byte")
    if byte_length(target) > MAX_TARGET:
        raise NameTooLong(f"invalid symlink target {target[:40]!r}...: longer than {MAX_TARGET} bytes")
    return target


def xattrs(pairs: tuple[tuple[str, bytes], ...]) -> None:
    """Check a stat's extended attributes: user ones but the mount's own, sorted by name, each
    name at most MAX_COMPONENT bytes and each value XATTR_VALUE_MAX, all of them XATTRS_MAX."""
    total, last = 0, ""
    for name, value in pairs:
        size = byte_length(name)
        if not name.startswith(XATTR_PREFIX) or name.startswith(XATTR_OWN_PREFIX) or size == len(XATTR_PREFIX):
            raise InvalidArgument(f"extended attribute {name[:60]!r}: only user.* ones are kept (not user.pfs.*)")
        if "\0" in name:
            raise InvalidArgument(f"extended attribute {name[:60]!r}: contains a NUL byte")
        if size > MAX_COMPONENT:
            raise NameTooLong(f"extended attribute {name[:60]!r}...: longer than {MAX_COMPONENT} bytes")
        if len(value) > XATTR_VALUE_MAX:
            raise InvalidArgument(f"extended attribute {name!r}: a value over {XATTR_VALUE_MAX} bytes")
        if name <= last:
            raise InvalidArgument(f"extended attribute {name[:60]!r}: out of order or given twice")
        total, last = total + size + len(value), name
    if total > XATTRS_MAX:
        raise InvalidArgument(f"extended attributes of {total} bytes: at most {XATTRS_MAX} are kept per entry")


def check_depth(path: str, longest_below: int) -> None:
    """Refuse a directory at `path` whose longest path below it (`longest_below` bytes, relative
    to it) would make a path over MAX_PATH."""
    total = byte_length(path) + 1 + longest_below if longest_below else byte_length(path)
    if total > MAX_PATH:
        raise NameTooLong(f"{path[:60]}: a path under it would be {total} bytes, longer than {MAX_PATH}")


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def split(p: str) -> tuple[str, str]:
    """('a/b', 'c') for 'a/b/c'; ('', 'c') for 'c'."""
    head, _, tail = p.rpartition("/")
    return head, tail
