"""How the CLI shows things: pachctl-style tables, human sizes and times, and `--json`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence

import msgspec

from pfsfuse.metadata.records import Commit

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


def commit_duration(c: Commit) -> str:
    return "-" if c.finished is None else duration(c.finished - c.started)


class Output:
    def table(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        from rich.console import Console  # loaded on first use: most commands print no table
        from rich.table import Table

        # Never wrap or truncate when piped: scripts parse these tables.
        tty = sys.stdout.isatty()
        console = Console(width=None if tty else 100_000, highlight=False, soft_wrap=not tty)
        t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for h in headers:
            t.add_column(h, no_wrap=True, overflow="ignore")
        for row in rows:
            t.add_row(*row)
        with console.capture() as captured:
            console.print(t)
        # rich pads the last column; tabwriter-style output ends lines at the text
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))

    def fields(self, pairs: Iterable[tuple[str, str]]) -> None:
        for k, v in pairs:
            self.line(f"{k}: {v}")

    def line(self, text: str, flush: bool = False) -> None:
        sys.stdout.write(text + "\n")
        if flush:
            sys.stdout.flush()

    def json(self, obj, flush: bool = False) -> None:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(jsonable(obj))).decode() + "\n")
        if flush:
            sys.stdout.flush()


def jsonable(obj):
    """Builtins for `--json`: hashes as hex, a commit's tree as its size and root page."""
    if isinstance(obj, list):
        return [jsonable(o) for o in obj]
    if isinstance(obj, Commit):
        d = msgspec.to_builtins(obj, builtin_types=(bytes,))
        d["tree"] = obj.tree.root.hex() if obj.tree.root else None
        d["size"] = obj.size
        return _hex(d)
    return _hex(msgspec.to_builtins(obj, builtin_types=(bytes,)))


def _hex(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _hex(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex(v) for v in value]
    return value
