"""Storing a file that equals a stored one except in some byte ranges (a mount's fsync or close of
a big file, `Put.since` and `Put.changed`): the stored file's chunks are kept, and only those the
ranges touch are cut again (`chunks/recut.py`). A sparse put's file holds only the changed ranges:
the rest of what is cut again is read from the stored file's chunks."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator

from pfsfuse.chunks import recut
from pfsfuse.chunks.chunker import MAX_SIZE, Chunker
from pfsfuse.engine.core import Staging
from pfsfuse.metadata.records import ChunkRef

ReadChunks = Callable[[Iterable[ChunkRef], int, int], Iterator[bytes]]  # EngineCore.read_chunks


def stage_changed(
    chunker: Chunker,
    fd: int,
    old: tuple[ChunkRef, ...],
    changed: list[tuple[int, int]],
    staging: Staging,
    final: bool,
    read_old: ReadChunks | None = None,
) -> list[ChunkRef] | None:
    """The chunks of the file open at `fd`, which equals the stored file of chunks `old` outside
    the `changed` ranges. `final` cuts as put-file would (the result is put-file's chunks if
    `old` were); otherwise the touched chunks are cut finely where little of them changed. With
    `read_old` (a sparse put) the file is read only in the changed ranges, the rest through
    `read_old`. None if a kept chunk is gone (collected since) or the file shrank while it was
    read: then it must be read whole."""
    sizes = [r.size for r in old]
    size = os.fstat(fd).st_size
    steps = recut.plan(sizes, size, changed)
    if not staging.keep(r for s in steps if isinstance(s, recut.Keep) for r in old[s.start : s.stop]):
        return None
    source: _Local | _Composed = _Local(fd)
    if read_old is not None:
        source = _Composed(fd, old, recut.merged(changed, size), read_old)
    if final:
        return _Settling(chunker, source, old, size, staging).run(steps)
    chunks: list[ChunkRef] = []
    for s in steps:
        if isinstance(s, recut.Keep):
            chunks += old[s.start : s.stop]
            continue
        window = _Window(source, s.start, s.end)
        chunks += staging.put_all(chunker.cut(window, s.fine))
        if window.short:
            return None
    return chunks


class _Settling:
    """Cuts each touched span as a whole-file cut would: from the cut point where it starts, on
    past the span's end until a cut lands on a boundary of the kept chunks again (content-defined
    cuts depend only on the bytes since the chunk's start, so from there on the two agree)."""

    def __init__(
        self, chunker: Chunker, source: _Local | _Composed, old: tuple[ChunkRef, ...], size: int, staging: Staging
    ):
        self.chunker, self.source, self.old, self.size, self.staging = chunker, source, old, size, staging
        self.starts = list(itertools.accumulate((r.size for r in old), initial=0))[:-1]
        self.boundaries = set(self.starts)
        self.chunks: list[ChunkRef] = []
        self.pos = 0  # the bytes the chunks made so far cover

    def run(self, steps: list[recut.Keep | recut.Recut]) -> list[ChunkRef] | None:
        for s in steps:
            if isinstance(s, recut.Keep):
                # Those a cut that ran on went past are left out: it stopped on a boundary.
                self.chunks += [self.old[i] for i in range(s.start, s.stop) if self.starts[i] >= self.pos]
                self.pos = max(self.pos, self.starts[s.stop - 1] + self.old[s.stop - 1].size)
            elif s.end > self.pos and not self._cut_until_settled(max(self.pos, s.start), s.end):
                return None
        return self.chunks

    def _cut_until_settled(self, start: int, end: int) -> bool:
        """Cut from `start` until a cut at or past `end` is a kept chunk's boundary (or the file
        ends); False if the file shrank meanwhile."""
        while True:
            # A window longer than MAX_SIZE past `end` holds a real cut: its last chunk may end
            # only because the window does, and is cut again with what follows.
            stop = min(self.size, max(start, end) + 2 * MAX_SIZE)
            window = _Window(self.source, start, stop)
            held = None  # the last chunk, stored once the next shows it is not cut short
            with contextlib.closing(self.chunker.cut(window)) as pieces:
                for piece in pieces:
                    if held is not None:
                        self.chunks.append(self.staging.put(held))
                        start += len(held)
                        if start >= end and start in self.boundaries:
                            self.pos = start
                            return not window.short
                    held = bytes(piece)
            if window.short:
                return False
            if stop == self.size:
                if held is not None:
                    self.chunks.append(self.staging.put(held))
                self.pos = self.size
                return True


class _Window:
    """Bytes [start, end) of the file being stored, read as a stream."""

    def __init__(self, source: _Local | _Composed, start: int, end: int):
        self.source, self.pos, self.end = source, start, end
        self.short = False  # the file ended before `end`

    def read(self, n: int) -> bytes:
        n = min(n, self.end - self.pos)
        data = self.source.pread(n, self.pos) if n > 0 else b""
        self.pos += len(data)
        self.short = self.short or len(data) < n
        return data


class _Local:
    """The writer's file, whole."""

    def __init__(self, fd: int):
        self.fd = fd

    def pread(self, n: int, pos: int) -> bytes:
        return os.pread(self.fd, n, pos)


class _Composed:
    """A sparse put's file: the `ranges` (sorted, disjoint [start, end) pairs: recut.merged) from
    the writer's file, the rest from the chunks `old` of the stored file it changed."""

    def __init__(self, fd: int, old: tuple[ChunkRef, ...], ranges: list[tuple[int, int]], read_old: ReadChunks):
        self.fd, self.old, self.read_old = fd, old, read_old
        self.old_starts = list(itertools.accumulate((r.size for r in old), initial=0))
        self.ranges = ranges
        self.range_starts = [a for a, _ in ranges]

    def pread(self, n: int, pos: int) -> bytes:
        """Up to `n` bytes at `pos`; fewer where either side ends early (the caller's `short`)."""
        parts, end, old_end = [], pos + n, self.old_starts[-1]
        while pos < end:
            i = bisect.bisect_right(self.range_starts, pos) - 1
            if i >= 0 and pos < self.ranges[i][1]:
                stop, mine = min(end, self.ranges[i][1]), True
            else:
                stop = min(end, self.ranges[i + 1][0]) if i + 1 < len(self.ranges) else end
                # Past the stored file's end, bytes no range names are a gap a write past the
                # end left: zeros, in the writer's file too.
                mine = pos >= old_end
                stop = stop if mine else min(stop, old_end)
            data = os.pread(self.fd, stop - pos, pos) if mine else self._old(pos, stop)
            parts.append(data)
            pos += len(data)
            if pos < stop:
                break
        return b"".join(parts)

    def _old(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the stored file, or fewer where it ends."""
        end = min(end, self.old_starts[-1])
        if start >= end:
            return b""
        first = bisect.bisect_right(self.old_starts, start) - 1
        last = bisect.bisect_left(self.old_starts, end)
        return b"".join(self.read_old(self.old[first:last], start - self.old_starts[first], end - start))
