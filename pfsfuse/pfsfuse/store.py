"""The store in a PFS_HOME: the in-process implementation of the API, composed of the file engine
(pfsfuse.engine) and the maintenance operations that work on it (fsck, garbage collection,
extract and restore). They are composed here, above both, so that the engine never imports the
operations that work on it: those see only its core (pfsfuse.engine.core).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pfsfuse import dump, fsck, gc
from pfsfuse.api.client import Client
from pfsfuse.api.types import GcResult, RestoreResult
from pfsfuse.engine.commits import Commits
from pfsfuse.engine.reads import Reads
from pfsfuse.engine.repos import Repos
from pfsfuse.engine.writes import Writes
from pfsfuse.metadata.errors import InvalidArgument


class Store(Repos, Commits, Writes, Reads, Client):
    """The store in a PFS_HOME: owns the RocksDB index, so one process at a time opens it (the
    daemon, or a test or benchmark in-process)."""

    def fsck(self) -> list[str]:
        return fsck.check(self)

    def garbage_collect(self, dry_run: bool = False, orphan_age: float = 3600.0) -> GcResult:
        if orphan_age < 0:
            raise InvalidArgument("the orphan age must not be negative")
        return gc.collect(self, dry_run, orphan_age)

    def extract(self, objects: bool = True) -> Iterator[bytes]:
        return dump.extract(self, objects)

    def restore(self, dump_file: BinaryIO) -> RestoreResult:
        result = dump.restore(self, dump_file)
        self.notify_changed()
        return result
