"""The chunks that writes in flight refer to: the contract between the engine's writers and the
garbage collector (see pfsfuse.gc for the rules it enforces)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class Guard:
    """The chunks that writes in flight refer to, and, while a collection runs, every chunk
    claimed and every pack indexed since it started."""

    def __init__(self):
        self.lock = threading.Lock()
        self._writes: dict[int, set[bytes]] = {}  # write number -> chunks it claimed
        self._next = 0
        self.claimed: set[bytes] | None = None
        self.indexed_packs: set[bytes] | None = None

    @contextlib.contextmanager
    def write(self) -> Iterator[set[bytes]]:
        """A write in flight, until its commit change is durable: yields its claims."""
        with self.lock:
            number = self._next
            self._next += 1
            claims = self._writes[number] = set()
        try:
            yield claims
        finally:
            with self.lock:
                del self._writes[number]

    def claim(self, claims: set[bytes], h: bytes, indexed: Callable[[bytes], bool]) -> bool:
        """Claims chunk `h` for a write; whether the write need not store it: it is indexed, or
        the write already has it."""
        if h in claims:
            return True
        with self.lock:
            claims.add(h)
            if self.claimed is not None:
                self.claimed.add(h)
            return indexed(h)

    def indexing(self, packs) -> None:
        """Called under the index lock, in the critical section that indexes chunks of `packs`."""
        with self.lock:
            if self.indexed_packs is not None:
                self.indexed_packs.update(packs)

    def start(self) -> None:
        with self.lock:
            self.claimed = set().union(*self._writes.values())
            self.indexed_packs = set()

    def next_write(self) -> int:
        """The number the next write to start will get."""
        with self.lock:
            return self._next

    def stop(self) -> None:
        with self.lock:
            self.claimed = self.indexed_packs = None

    def running_since(self, number: int) -> bool:
        """Whether a write numbered below `number` is still running."""
        with self.lock:
            return any(n < number for n in self._writes)
