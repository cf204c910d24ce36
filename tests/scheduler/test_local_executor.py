"""The local executor's bookkeeping when workers die at awkward moments."""

from __future__ import annotations

import trio

from pfsfuse.scheduler.executor import LocalExecutor


class _Dying(LocalExecutor):
    """Workers that exit at once, as one whose pipeline's command cannot start."""

    async def _spawn(self, pipeline: str, worker: str) -> trio.Process:
        return await trio.lowlevel.open_process(["sh", "-c", "exit 3"])


async def test_a_worker_dying_while_its_pipeline_is_stopped_does_not_end_the_daemon(tmp_path, autojump_clock):
    async with trio.open_nursery() as nursery:
        ex = _Dying(tmp_path, "unix:/nowhere", nursery)
        died = trio.Event()
        ex.lost = lambda *args: died.set()
        await ex.ensure("p", 1)
        await died.wait()
        await ex.stop("p")  # while the watcher waits before starting another worker
        await trio.sleep(5)  # past that wait (the clock jumps: no real time passes)
        assert not ex.alive("p", "p-1")
        nursery.cancel_scope.cancel()
