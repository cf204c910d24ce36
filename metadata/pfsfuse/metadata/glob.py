"""Glob patterns over trees, as Pachyderm uses them for datums and `glob-file`.

A pattern is a '/'-separated list of components; leading and trailing '/' are optional, and '/'
(or '') alone matches the root itself. Each component matches one name with fnmatch semantics
('*', '?', '[...]', '[!...]'; a leading '.' is not special), except '**', which matches zero or
more directory levels: 'a/**' matches 'a' and everything below it, '**' every path but the root.

Matching runs the pattern as a small automaton along the path: its state is the set of component
indexes still to be matched. `glob` walks the tree once, carrying that set down, so each path is
reported at most once and in path order (the order of `tree.walk`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator
from typing import cast

from pfsfuse.metadata import tree
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.metadata.names import join
from pfsfuse.metadata.records import DirNode, Node

_WILDCARD = re.compile(r"[*?\[]")


def glob(src: tree.PageReader, root: DirNode, pattern: str) -> Iterator[tuple[str, Node]]:
    """(path, node) for each path under `root` that `pattern` matches, in path order.

    An invalid pattern raises InvalidArgument here, not when iterating.
    """
    return _glob(src, root, _Pattern(pattern))


def _glob(src: tree.PageReader, root: DirNode, pat: _Pattern) -> Iterator[tuple[str, Node]]:
    if not pat.parts:
        yield "", root
        return
    stack = [pat.children(src, root, "", pat.start)]
    while stack:
        for path, node, states in stack[-1]:
            if pat.done(states):
                yield path, node
            if isinstance(node, DirNode) and pat.live(states):
                stack.append(pat.children(src, node, path, states))
                break
        else:
            stack.pop()


def is_pattern(s: str) -> bool:
    """Whether `s` has wildcards ('*', '?', '[')."""
    return _WILDCARD.search(s) is not None


def match(pattern: str, path: str) -> bool:
    """Whether `pattern` matches canonical `path` ('' is the root), as `glob` would report it."""
    pat = _Pattern(pattern)
    if not path or not pat.parts:
        return path == "" and not pat.parts
    states = pat.start
    for name in path.split("/"):
        states = pat.step(states, name)
        if not states:
            return False
    return pat.done(states)


class _Pattern:
    def __init__(self, pattern: str):
        stripped = pattern.strip("/")
        self.parts = stripped.split("/") if stripped else []
        for part in self.parts:
            if part in ("", ".", ".."):
                what = "an empty component" if part == "" else f"a {part!r} component"
                raise InvalidArgument(f"invalid glob pattern {pattern!r}: contains {what}")
        self.matchers = [_matcher(part) for part in self.parts]
        self.start = self._closure({0})

    def _closure(self, states: set[int]) -> frozenset[int]:
        """`states` plus those reached by letting each '**' match zero levels."""
        out = set(states)
        for i in states:
            while i < len(self.parts) and self.parts[i] == "**":
                i += 1
                out.add(i)
        return frozenset(out)

    def step(self, states: frozenset[int], name: str) -> frozenset[int]:
        """The states after matching one more path component, `name`."""
        nxt = set()
        for i in states:
            if i == len(self.parts):
                continue
            if self.parts[i] == "**":
                nxt.add(i)  # '**' takes this level and may take more
            elif self.matchers[i](name):
                nxt.add(i + 1)
        return self._closure(nxt)

    def done(self, states: frozenset[int]) -> bool:
        return len(self.parts) in states

    def live(self, states: frozenset[int]) -> bool:
        """Whether something below the current path may still match."""
        return any(i < len(self.parts) for i in states)

    def children(
        self, src: tree.PageReader, d: DirNode, base: str, states: frozenset[int]
    ) -> Iterator[tuple[str, Node, frozenset[int]]]:
        """(path, node, states after it) for the entries of `d` that keep some state alive."""
        wanted = {self.parts[i] for i in states if i < len(self.parts)}
        if any(_WILDCARD.search(part) for part in wanted):
            # Names sharing a literal prefix are adjacent in name order: seek to the first.
            prefix = os.path.commonprefix([_WILDCARD.split(part, 1)[0] for part in wanted])
            entries: Iterator[tuple[str, Node]] = _prefixed(src, d, prefix) if prefix else tree.list_dir(src, d)
        else:
            # Only literal names: look them up instead of listing a possibly huge directory.
            entries = ((name, node) for name in sorted(wanted) if (node := tree.child(src, d, name)) is not None)
        for name, node in entries:
            nxt = self.step(states, name)
            if nxt:
                yield join(base, name), node, nxt


def _prefixed(src: tree.PageReader, d: DirNode, prefix: str) -> Iterator[tuple[str, Node]]:
    """The entries of `d` whose names start with `prefix`, reading only the pages that hold them."""
    node = tree.child(src, d, prefix)
    if node is not None:
        yield prefix, node
    for name, node in tree.list_dir(src, d, prefix):
        if not name.startswith(prefix):
            return
        yield name, node


def _matcher(part: str) -> Callable[[str], bool]:
    # Bound methods, not lambdas: called once per name listed. A match object is truthy.
    if not _WILDCARD.search(part):
        return cast(Callable[[str], bool], part.__eq__)
    return cast(Callable[[str], bool], re.compile(fnmatch.translate(part)).match)
