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


async def test_workers_dying_young_back_off_and_then_are_a_crash_loop(tmp_path, autojump_clock):
    from pfsfuse.scheduler import executor

    async with trio.open_nursery() as nursery:
        ex = _Dying(tmp_path, "unix:/nowhere", nursery)
        send, receive = trio.open_memory_channel[float](100)
        troubles: list[str] = []
        ex.lost = lambda *args: send.send_nowait(trio.current_time())
        ex.trouble = lambda pipeline, reason: troubles.append(reason)
        await ex.ensure("p", 1)
        deaths = [await receive.receive() for _ in range(executor.CRASH_LOOP + 1)]
        gaps = [b - a for a, b in zip(deaths, deaths[1:], strict=False)]
        assert all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps  # backing off
        assert len(troubles) == 1 and troubles[0].startswith("crash loop: its workers keep dying (exit status 3)")
        ex.running("p")  # a worker took work: the loop is over
        assert troubles[-1] == ""
        await ex.stop("p")
        nursery.cancel_scope.cancel()
