"""The chunks that writes in flight refer to: the contract between the engine's writers and the
garbage collector (see pfsfuse.gc for the rules it enforces)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

from pfsfuse.metadata.errors import FailedPrecondition


class Write:
    """One write in flight: the chunks it claimed, and the unindexed packs that collections
    decided to delete while it ran (it must not index chunks in those)."""

    def __init__(self, condemned: Iterable[bytes]):
        self.claims: set[bytes] = set()
        self.condemned = set(condemned)


class Guard:
    """The chunks that writes in flight refer to, and, while a collection runs, every chunk
    claimed and every pack indexed since it started, and the packs it decided to delete."""

    def __init__(self):
        self.lock = threading.Lock()
        self._writes: dict[int, Write] = {}  # by write number
        self._next = 0
        self.claimed: set[bytes] | None = None
        self.indexed_packs: set[bytes] | None = None
        self.condemned: set[bytes] | None = None

    @contextlib.contextmanager
    def write(self) -> Iterator[Write]:
        """A write in flight, until its commit change is durable."""
        with self.lock:
            number = self._next
            self._next += 1
            # Packs condemned before it started may be deleted while it checks they exist.
            w = self._writes[number] = Write(self.condemned or ())
        try:
            yield w
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

    def keep(self, claims: set[bytes], hashes: Iterable[bytes], indexed: Callable[[list[bytes]], bool]) -> bool:
        """Claims stored chunks that a write refers to again without storing them; whether all
        are still indexed. If one is not, the write claims none of them (it must store them)."""
        new = [h for h in dict.fromkeys(hashes) if h not in claims]
        with self.lock:  # claimed before checked, as `claim` does
            claims.update(new)
            if self.claimed is not None:
                self.claimed.update(new)
        if indexed(new):
            return True
        claims.difference_update(new)
        return False

    def indexing(self, packs: set[bytes], write: Write | None = None) -> None:
        """Called under the index lock, in the critical section that indexes chunks of `packs`.
        Refuses packs that a collection condemned while `write` ran: it deletes them."""
        with self.lock:
            lost = packs & write.condemned if write is not None else None
            if lost:
                raise FailedPrecondition(
                    f"pack {min(lost).hex()}, stored by this client, is being deleted by a garbage "
                    "collection that ran while the write did; write again"
                )
            if self.indexed_packs is not None:
                self.indexed_packs.update(packs)

    def condemn(self, packs: list[bytes]) -> list[bytes]:
        """Of the packs a collection means to delete (or rewrite), those in which no chunk was
        indexed since it started, so that what it read of the index still holds for them: from
        now on, no write running or starting while it runs may index chunks in them."""
        with self.lock:
            doomed = [p for p in packs if p not in (self.indexed_packs or ())]
            if self.condemned is not None:
                self.condemned.update(doomed)
            for w in self._writes.values():
                w.condemned.update(doomed)
            return doomed

    def start(self) -> None:
        with self.lock:
            self.claimed = set().union(*(w.claims for w in self._writes.values()))
            self.indexed_packs = set()
            self.condemned = set()

    def next_write(self) -> int:
        """The number the next write to start will get."""
        with self.lock:
            return self._next

    def stop(self) -> None:
        with self.lock:
            self.claimed = self.indexed_packs = self.condemned = None

    def running_since(self, number: int) -> bool:
        """Whether a write numbered below `number` is still running."""
        with self.lock:
            return any(n < number for n in self._writes)
