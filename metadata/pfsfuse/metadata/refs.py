"""Commit references: a commit id or a branch name, followed by ancestry steps.

`master^` and `master~1` are the parent, `master^3` and `master~3` the third ancestor, and steps
chain (`master^^`, `master~2^`), as in Pachyderm 1.7.
"""

from __future__ import annotations

import re

from pfsfuse.metadata import names
from pfsfuse.metadata.errors import InvalidArgument

_STEP = re.compile(r"([\^~])(\d*)")
WORD = re.compile(r"(?P<repo>[^@:/]+)@(?P<ref>[^:]+)(?::(?P<path>.*))?", re.S)  # repo@ref[:path]


def parse(ref: str) -> tuple[str, int]:
    """Split a ref into its base (commit id or branch name) and the number of ancestor steps."""
    if not isinstance(ref, str) or not ref:
        raise InvalidArgument("empty commit reference")
    cut = min((i for i in (ref.find("^"), ref.find("~")) if i >= 0), default=len(ref))
    base, rest = ref[:cut], ref[cut:]
    steps, pos = 0, 0
    while pos < len(rest):
        m = _STEP.match(rest, pos)
        if not m:
            raise InvalidArgument(f"invalid commit reference {ref!r}")
        steps += int(m.group(2)) if m.group(2) else 1
        pos = m.end()
    if names.COMMIT_ID.fullmatch(base) is None:
        try:
            names.branch_name(base)
        except InvalidArgument:
            raise InvalidArgument(f"invalid commit reference {ref!r}: expected a commit id or branch name") from None
    return base, steps


def is_commit_id(s: str) -> bool:
    return names.COMMIT_ID.fullmatch(s) is not None


def split(text: str) -> tuple[str, str, str | None] | None:
    """(repo, ref, path or None) of `"repo@ref[:path]"` with a valid repo name and ref; None if
    `text` is not written so (the CLI then takes it as a plain word). The SDK reads the same."""
    m = WORD.fullmatch(text)
    if m is None:
        return None
    try:
        parse(m["ref"])
        repo = names.repo_name(m["repo"])
    except InvalidArgument:
        return None
    return repo, m["ref"], m["path"]
