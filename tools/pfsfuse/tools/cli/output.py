"""How the CLI shows things: pachctl-style tables, human sizes and times, and `--json`."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Sequence

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]


def size(n: int) -> str:
    """Binary size with four significant digits, as pachctl prints it ("57.27KiB")."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.4g}{_UNITS[unit]}"


def duration(seconds: float) -> str:
    """A rough human duration, worded like pachctl's ("About a minute", "3 hours")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 14:
        return f"{hours // 24} days"
    if hours < 24 * 60:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 730:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds / 3600) // (24 * 365)} years"


def ago(ts: float | None) -> str:
    return "-" if ts is None else f"{duration(time.time() - ts)} ago"


def when(ts: float) -> str:
    """A moment as local time, with its zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def commit_duration(c) -> str:  # a Commit, or the light client's record of one
    return "-" if c.finished is None else duration(c.finished - c.started)


class Output:
    def table(self, headers: Sequence[str], rows: Iterable[Sequence[str]], window: int | None = None) -> None:
        """Columns two spaces apart, each as wide as its widest cell, as pachctl's tabwriter
        prints them: never wrapped or cut, since scripts parse them. The header is bold on a
        terminal. With `window`, the widths come from the first `window` rows and the rest are
        printed as they come (a wider cell pushes its line along): a listing of any length
        starts at once and is never held whole."""
        it = iter(rows)
        lines = [list(headers), *map(list, itertools.islice(it, window))]
        widths = [max(_width(line[i]) for line in lines) for i in range(len(headers))]
        for k, cells in enumerate(itertools.chain(lines, it)):
            text = "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=False)).rstrip()
            self.line(f"\x1b[1m{text}\x1b[0m" if k == 0 and sys.stdout.isatty() else text, flush=k == len(lines) - 1)

    def fields(self, pairs: Iterable[tuple[str, str]]) -> None:
        for k, v in pairs:
            self.line(f"{k}: {v}")

    def line(self, text: str, flush: bool = False) -> None:
        sys.stdout.write(text + "\n")
        if flush:
            sys.stdout.flush()

    def json(self, obj, flush: bool = False) -> None:
        sys.stdout.write(json_text(jsonable(obj)) + "\n")
        if flush:
            sys.stdout.flush()


def _width(text: str) -> int:
    """Terminal cells: two for a wide (CJK) character, none for a combining mark."""
    if text.isascii():
        return len(text)
    import unicodedata  # an extension module: loaded only for text that needs it

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def oserror_message(e: OSError) -> str:
    """An OSError as one line for people: the file it concerns, and what went wrong."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


_INF = float("inf")


class NotPlain(ValueError):
    """JSON that the standard library would print otherwise than msgspec does."""


def jsonable(obj):
    """Builtins for `--json`: hashes as hex, a commit's tree as its size and root page. A record
    of the light client (pfsfuse.api.lite) gives its own, the same as its Struct's."""
    if isinstance(obj, list):
        return [jsonable(o) for o in obj]
    from pfsfuse.api import lite

    if isinstance(obj, lite.Record):
        d = obj.builtins()
        return commit_builtins(d, obj.root, obj.size) if isinstance(obj, lite.Commit) else d
    import msgspec  # a Struct: msgspec is loaded already

    from pfsfuse.metadata.records import Commit

    if isinstance(obj, Commit):
        return commit_builtins(msgspec.to_builtins(obj, builtin_types=(bytes,)), obj.tree.root, obj.size)
    return _hex(msgspec.to_builtins(obj, builtin_types=(bytes,)))


def commit_builtins(d: dict, root: bytes | None, size: int) -> dict:
    """A commit's builtins as `--json` shows them: its tree as its root page's hash and size."""
    d["tree"] = root.hex() if root else None
    d["size"] = size
    return _hex(d)


def json_text(data) -> str:
    """Builtins as indented JSON. The light path, which has not loaded msgspec, prints with the
    standard library: the same text, but for floats in exponent form (never a time or a size),
    which it refuses (NotPlain) rather than print differently."""
    if "msgspec" in sys.modules:
        import msgspec

        return msgspec.json.format(msgspec.json.encode(data)).decode()
    import json

    def check(value) -> None:
        if isinstance(value, float) and ("e" in repr(value) or value != value or value in (_INF, -_INF)):
            raise NotPlain(repr(value))
        for v in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
            check(v)

    check(data)
    return json.dumps(data, indent=2, ensure_ascii=False)


def _hex(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _hex(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex(v) for v in value]
    return value
