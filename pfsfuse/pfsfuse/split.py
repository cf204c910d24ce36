"""`put-file --split`: a stream cut into records of lines, JSON values, or the rows of a pg_dump.

The stream is read in big blocks into one buffer and records are found with bytes methods that run
at memory speed (count, find, rfind), never line by line in Python. A record holds at most
`datums` lines or values, and at most `max_bytes` bytes unless a single datum is bigger; with
neither set, one datum. Records concatenate back to the stream byte for byte: whitespace between
JSON values belongs to the value before it, and a pg_dump's text before and after its rows is
kept as the header and footer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from pfsfuse.metadata.errors import InvalidArgument

KINDS = ("line", "json", "sql")
BLOCK = 32 << 20  # bytes read at a time
MAX_HEADER = 64 << 20  # how far a pg_dump is searched for its COPY line
MAX_VALUE = 256 << 20  # an unfinished JSON value longer than this is reported as malformed
_NL = b"\n"
_WS = re.compile(r"[ \t\n\r]*")
_COPY = re.compile(rb"^COPY [^\n]* FROM stdin;\n", re.M)
_JSON = json.JSONDecoder()


def _ws_end(text: str, at: int, end: int) -> int:
    """Where the whitespace from `at` ends (the pattern matches the empty string too)."""
    m = _WS.match(text, at, end)
    assert m is not None
    return m.end()


class Splitter:
    """Iterating yields the records, each a memoryview valid until the next is asked for. For
    `sql`, `header` is set before the first record and `footer` once the last has been read."""

    def __init__(self, stream, kind: str, datums: int = 0, max_bytes: int = 0):
        if kind not in KINDS:
            raise InvalidArgument(f"unknown split {kind!r}: use line, json or sql")
        if datums < 0 or max_bytes < 0:
            raise InvalidArgument("--target-file-datums and --target-file-bytes must not be negative")
        self.kind = kind
        self.datums = datums or (0 if max_bytes else 1)
        self.max_bytes = max_bytes
        self.header: bytes | None = None
        self.footer: bytes | None = None
        self._src = _Buffer(stream)
        self._avg = 100.0  # bytes per line, to guess where the next record ends
        self._rows_searched = -1  # the buffer fill _rows_found was searched in
        self._rows_found: int | None = None

    def __iter__(self) -> Iterator[memoryview]:
        if self.kind == "line":
            return self._records(self._line_cut, lambda: None)
        if self.kind == "json":
            return self._records(self._json_cut, lambda: None)
        return self._sql()

    def _records(self, cut, limit) -> Iterator[memoryview]:
        """Records up to `limit()` (the end of the pg_dump's rows), or to the stream's end."""
        src = self._src
        while True:
            end = limit()
            region_end, region_eof = (src.end, src.eof) if end is None else (end, True)
            if src.pos == region_end and region_eof:
                return
            at = cut(src.pos, region_end, region_eof)
            if at is None:
                if not src.more():
                    raise AssertionError("a cut at the end of the data must succeed")
                continue
            if at < 0:  # only whitespace is left
                src.pos = region_end
                return
            yield memoryview(src.buf)[src.pos : at]
            src.pos = at

    # -- lines ------------------------------------------------------------------------------

    def _line_cut(self, pos: int, end: int, eof: bool) -> int | None:
        """Where the record starting at `pos` ends; None when more data is needed to tell."""
        by_count = by_size = None
        if self.datums:
            by_count = self._after_lines(pos, end, self.datums)
            if by_count is None and eof:
                by_count = end
        if self.max_bytes:
            by_size = self._within(pos, end, eof)
        if by_count is None or by_size is None:
            return by_size if by_count is None else by_count
        return min(by_count, by_size)

    def _after_lines(self, pos: int, end: int, n: int) -> int | None:
        """Just past the n-th newline from `pos`, or None if there are fewer before `end`. Counts
        up to a guess from the average line length, then steps the few lines it is off by."""
        buf = self._src.buf
        guess = min(end, pos + int(n * self._avg) + 1)
        have = buf.count(_NL, pos, guess)
        if have >= n:
            i = guess
            for _ in range(have - n + 1):
                i = buf.rfind(_NL, pos, i)
        else:
            i = guess - 1
            for _ in range(n - have):
                i = buf.find(_NL, i + 1, end)
                if i < 0:
                    return None
        self._avg = max(1.0, (i + 1 - pos) / n)
        return i + 1

    def _within(self, pos: int, end: int, eof: bool) -> int | None:
        """The end of the whole lines from `pos` that fit in max_bytes (a longer line alone)."""
        buf = self._src.buf
        limit = pos + self.max_bytes
        if limit > end:
            return end if eof else None
        last = buf.rfind(_NL, pos, limit)
        if last >= 0:
            return last + 1
        nxt = buf.find(_NL, limit, end)
        if nxt >= 0:
            return nxt + 1
        return end if eof else None

    # -- JSON -------------------------------------------------------------------------------

    def _json_cut(self, pos: int, end: int, eof: bool) -> int | None:
        """The end of the values (and the whitespace after each) making the record at `pos`; -1
        when only whitespace is left. The buffer is read as latin-1 so that str offsets are byte
        offsets; json's C scanner finds where each value ends and rejects malformed input."""
        text = self._src.text()
        at, count = pos, 0
        while not self.datums or count < self.datums:
            start = _ws_end(text, at, end)
            if start == end:
                if not eof:
                    return None
                return at if count else -1
            try:
                _, stop = _JSON.raw_decode(text, start)
            except json.JSONDecodeError as e:
                if self._more_may_help(e, pos, end, eof):
                    return None
                raise InvalidArgument(f"malformed JSON at byte {self._src.offset + e.pos}: {e.msg}") from None
            after = _ws_end(text, stop, end)
            if after == end and not eof:
                return None  # the value or its whitespace may go on in the next block
            if self.max_bytes and count and after - pos > self.max_bytes:
                return at
            at, count = after, count + 1
            if self.max_bytes and at - pos >= self.max_bytes:
                return at
        return at

    def _more_may_help(self, e: json.JSONDecodeError, pos: int, end: int, eof: bool) -> bool:
        """Whether a decode error may only mean that the value goes on past the block."""
        if eof or end - pos > MAX_VALUE:
            return False
        return e.msg.startswith("Unterminated string") or e.pos + (64 << 10) >= end

    # -- pg_dump ----------------------------------------------------------------------------

    def _sql(self) -> Iterator[memoryview]:
        src = self._src
        while (m := _COPY.search(src.buf, 0, src.end)) is None:
            if src.buf.startswith(b"PGDMP"):
                raise InvalidArgument("a custom-format pg_dump: dump in plain format (pg_dump -Fp)")
            if src.eof or src.end > MAX_HEADER:
                raise InvalidArgument("not a plain pg_dump with table data: no 'COPY ... FROM stdin;' line")
            src.more()
        self.header = bytes(src.buf[: m.end()])
        src.pos = m.end()
        yield from self._records(self._line_cut, self._rows_end)
        while src.more():
            pass
        self.footer = bytes(src.buf[src.pos : src.end])
        extra = _COPY.search(self.footer)
        if extra is not None:
            raise InvalidArgument(
                "the pg_dump holds rows of more than one table (a second COPY at byte "
                f"{src.offset + src.pos + extra.start()}); split one table at a time (pg_dump -t)"
            )

    def _rows_end(self) -> int | None:
        """Where the COPY rows end (the '\\.' line), or None if not in the buffer yet. Searched
        once per fill of the buffer: the answer holds until the next."""
        src = self._src
        if self._rows_searched != src.fills:
            self._rows_searched, self._rows_found = src.fills, self._find_rows_end()
        return self._rows_found

    def _find_rows_end(self) -> int | None:
        src = self._src
        buf, pos = src.buf, src.pos
        if buf.startswith(b"\\.\n", pos, src.end):
            return pos
        i = buf.find(b"\n\\.\n", pos, src.end)
        if i >= 0:
            return i + 1
        if src.eof:
            if buf[pos : src.end] == b"\\." or buf.endswith(b"\n\\.", 0, src.end):
                return src.end - 2
            raise InvalidArgument("the pg_dump's COPY rows do not end with a '\\.' line")
        return None


class _Buffer:
    """The stream's unread bytes are buf[pos:end]; offset is the stream offset of buf[0]."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = bytearray(BLOCK)
        self.pos = self.end = self.offset = 0
        self.fills = 0
        self.eof = False
        self._text: str | None = None
        self.more()

    def more(self) -> bool:
        """Reads on after what is held (moving it to the front, or into a bigger buffer when it
        fills this one); False at the end of the stream."""
        if self.eof:
            return False
        held = self.end - self.pos
        if held + BLOCK // 2 > len(self.buf):
            # A new buffer, not a resize: views of earlier records may still be alive.
            bigger = bytearray(max(2 * len(self.buf), held + BLOCK))
            bigger[:held] = self.buf[self.pos : self.end]
            self.buf = bigger
        elif self.pos:
            self.buf[:held] = self.buf[self.pos : self.end]
        self.offset += self.pos
        self.pos, self.end = 0, held
        self.fills += 1
        self._text = None
        view = memoryview(self.buf)
        while self.end < len(self.buf):
            n = _read_into(self.stream, view[self.end :])
            if not n:
                self.eof = True
                break
            self.end += n
        return True

    def text(self) -> str:
        """The buffer as latin-1 text, so that character offsets are byte offsets."""
        if self._text is None:
            self._text = self.buf[: self.end].decode("latin-1")
        return self._text


def _read_into(stream, view: memoryview) -> int:
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto(view) or 0
    piece = stream.read(len(view))
    view[: len(piece)] = piece
    return len(piece)
