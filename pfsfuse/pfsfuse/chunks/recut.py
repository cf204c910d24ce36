"""Which chunks of a file a few in-place writes touch. A mount's fsync of a big file sends the
byte ranges written since the file it last stored; the chunks around them are cut again, the
others kept, so the fsync costs what was written, not the file's size."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Keep:
    start: int  # old chunks [start, stop), kept as they are
    stop: int


@dataclass(frozen=True)
class Recut:
    start: int  # bytes [start, end) of the new content, cut into new chunks
    end: int
    # Mostly unchanged bytes are cut fine, so that the next small write there re-cuts little;
    # mostly new ones (a rewrite, an append) as any file is.
    fine: bool


def plan(sizes: Sequence[int], size: int, changed: Iterable[tuple[int, int]]) -> list[Keep | Recut]:
    """How to make the chunk list of a file of `size` bytes from its old chunks (of `sizes`), when
    the two differ only in the `changed` (offset, length) ranges and past the old size."""
    starts = [0, *itertools.accumulate(sizes)]
    old = starts.pop()
    ranges = merged(changed, max(old, size))
    touched = [False] * len(sizes)
    for a, b in ranges:
        i = bisect.bisect_right(starts, a) - 1
        while 0 <= i < len(sizes) and starts[i] < b:
            touched[i] = True
            i += 1
    if sizes and size > old:
        touched[-1] = True  # it ended only because the file did: cut again with what follows
    elif 0 < size < old:
        i = bisect.bisect_right(starts, size - 1) - 1
        if starts[i] + sizes[i] != size:
            touched[i] = True  # the new last chunk is a part of this one
    steps: list[Keep | Recut] = []
    cut_from = keep_from = None
    live = bisect.bisect_left(starts, size)  # the old chunks that start before the new end
    for i, start in enumerate(starts[:live]):
        if touched[i]:
            if keep_from is not None:
                steps.append(Keep(keep_from, i))
                keep_from = None
            cut_from = start if cut_from is None else cut_from
            continue
        if cut_from is not None:
            steps.append(_recut(cut_from, start, ranges, old))
            cut_from = None
        keep_from = i if keep_from is None else keep_from
    if keep_from is not None:
        steps.append(Keep(keep_from, live))
    if cut_from is not None or size > old:
        steps.append(_recut(old if cut_from is None else cut_from, size, ranges, old))
    return steps


def merged(changed: Iterable[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """The ranges as sorted, disjoint [start, end) pairs within [0, limit)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((off, min(off + n, limit)) for off, n in changed if n and off < limit):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _recut(start: int, end: int, ranges: list[tuple[int, int]], old: int) -> Recut:
    new = max(0, end - max(start, old))  # appended
    first = bisect.bisect_right(ranges, (start, start)) - 1  # the last range starting at or before
    for a, b in itertools.islice(ranges, max(first, 0), None):
        if a >= end:
            break
        new += max(0, min(b, end, old) - max(a, start))
    return Recut(start, end, fine=2 * new < end - start)
