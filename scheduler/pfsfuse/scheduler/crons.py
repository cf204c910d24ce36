"""Cron inputs: at every tick of its schedule a cron input's repo gets a commit of the tick's time."""

from __future__ import annotations

import functools
import io
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import trio

from pfsfuse.api.client import Client
from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import PfsError
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.records import PipelineInfo

log = logging.getLogger("pfsfuse.scheduler")


def inputs(i: specs.Input) -> list[specs.CronInput]:
    if i.cron is not None:
        return [i.cron]
    return [c for s in (i.cross or i.union or []) for c in inputs(s)]


async def run(client: Client, p: PipelineInfo, c: specs.CronInput, scope: trio.CancelScope) -> None:
    """Commit the tick's time to the cron repo at every tick of the schedule."""
    repo = specs.cron_repo(c, p.name)
    start = datetime.fromisoformat(c.start.replace("Z", "+00:00")).timestamp() if c.start else p.created
    with scope:
        for tick in ticks(c.spec, start):
            await trio.sleep(max(0.0, tick - time.time()))
            stamp = datetime.fromtimestamp(tick, UTC).isoformat().replace("+00:00", "Z")
            path = stamp if p.spec.incremental else "time"
            write = functools.partial(
                client.write_files, repo, "master", [Put(path, stream=io.BytesIO(stamp.encode()))]
            )
            try:
                await trio.to_thread.run_sync(write)
            except PfsError as e:
                log.error("cron %s of %s: %s", c.name, p.name, e)


def ticks(schedule: str, start: float) -> Iterator[float]:
    """Tick times after now on the schedule, counted from `start` (missed ticks are skipped)."""
    kind, value = specs.schedule(schedule)
    if kind == "every":
        n = max(0, math.floor((time.time() - start) / value)) + 1
        while True:
            tick = start + n * value
            if tick >= time.time() - value:
                yield tick
            n = max(n + 1, math.floor((time.time() - start) / value) + 1)
    from croniter import croniter

    it = croniter(value, datetime.fromtimestamp(max(start, time.time()), UTC))
    while True:
        yield it.get_next(float)
