"""The scheduler's work queues: per pipeline, the datums waiting for a worker and those a worker
holds, where each job's results go, and the latest output lines of running datums (what
`get-logs` shows of a datum before it ends)."""

from __future__ import annotations

import time
from collections import deque

import trio

from pfsfuse.scheduler.records import DatumTask

LOG_TAIL = 64 << 10  # bytes of a running datum's output kept


class Queue:
    """A pipeline's datums waiting for a worker, and those being processed, by (job, key)."""

    def __init__(self):
        self.pending: deque[DatumTask] = deque()
        self.running: dict[tuple[str, str], tuple[str, DatumTask]] = {}
        self.results: dict[str, trio.MemorySendChannel] = {}  # job -> where its results go
        self.live: dict[tuple[str, str], LiveOutput] = {}  # running datums' latest output lines
        self.changed = trio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class LiveOutput:
    """A running datum's latest output lines, as its worker sends them: the last LOG_TAIL bytes."""

    def __init__(self, try_: int):
        self.try_ = try_
        self.lines: deque[tuple[float, int, str]] = deque()  # (when it came, its number, the line)
        self.size = 0

    def add(self, first: int, text: str) -> None:
        now = time.time()
        for n, line in enumerate(output_lines(text), first):
            self.lines.append((now, n, line))
            self.size += len(line) + 1
        while self.size > LOG_TAIL:
            self.size -= len(self.lines.popleft()[2]) + 1


def output_lines(text: str) -> list[str]:
    """Lines as the worker numbers them: split at newlines only (not str.splitlines' others)."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines
