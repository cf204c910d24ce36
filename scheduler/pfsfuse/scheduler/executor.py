"""Where workers run. The scheduler asks an executor for N workers per pipeline; workers then pull
datums from the daemon's pipeline API, so the same worker runs as a local process or in a pod.

`LocalExecutor` runs workers as processes on this machine (a Kubernetes executor creates pods
instead). A worker that dies is reported to the scheduler, whose datums it held then count as
failed tries, and is started again while the pipeline still needs it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import trio

from pfsfuse.scheduler.spec import PipelineSpec

log = logging.getLogger("pfsfuse.scheduler")


class Executor(ABC):
    lost = None  # set by the daemon: lost(pipeline, worker, why, stopped) when a worker is gone
    # Set by the daemon: token(pipeline) is the token a worker runs with, as PFS_AUTH_TOKEN
    # (None while auth is not active).
    token: Callable[[str], str | None] | None = None
    trouble = None  # set by the daemon: trouble(pipeline, reason) when its workers cannot run ("" once they do)

    # Where workers run, as inspect-pipeline shows it.
    description = "local (processes on the daemon's host)"

    def check(self, spec: PipelineSpec) -> None:
        """Raise InvalidArgument if this executor cannot run the spec's workers."""

    @abstractmethod
    async def configure(self, spec: PipelineSpec) -> None:
        """A pipeline was created or updated: its running workers are restarted."""

    @abstractmethod
    async def ensure(self, pipeline: str, workers: int) -> None:
        """At least `workers` workers for the pipeline."""

    @abstractmethod
    def alive(self, pipeline: str, worker: str) -> bool:
        """Whether a worker is running (work handed to a gone worker would be lost)."""

    @abstractmethod
    async def stop(self, pipeline: str) -> None: ...

    async def forget(self, pipeline: str) -> None:
        """The pipeline was deleted: its workers and whatever else the executor kept for it go."""
        await self.stop(pipeline)

    @abstractmethod
    async def stop_all(self) -> None: ...


class LocalExecutor(Executor):
    def __init__(self, home: Path, address: str, nursery: trio.Nursery):
        self.home = home
        self.address = address
        self.nursery = nursery
        self._procs: dict[str, dict[str, trio.Process]] = {}
        self._wanted: dict[str, int] = {}
        self._serial = 0

    async def configure(self, spec: PipelineSpec) -> None:
        await self.stop(spec.name)

    async def ensure(self, pipeline: str, workers: int) -> None:
        self._wanted[pipeline] = max(workers, self._wanted.get(pipeline, 0))
        procs = self._procs.setdefault(pipeline, {})
        while len(procs) < self._wanted[pipeline]:
            self._serial += 1
            worker = f"{pipeline}-{self._serial}"
            procs[worker] = await self._spawn(pipeline, worker)
            self.nursery.start_soon(self._watch, pipeline, worker, procs[worker])

    async def _spawn(self, pipeline: str, worker: str) -> trio.Process:
        logs = self.home / "workers"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{worker}.log", "ab")
        env = {**os.environ, "PFS_ADDRESS": self.address, "PFS_HOME": str(self.home)}
        env.pop("PFS_AUTH_TOKEN", None)  # never the daemon's own
        token = self.token(pipeline) if self.token is not None else None
        if token is not None:
            env["PFS_AUTH_TOKEN"] = token
        try:
            return await trio.lowlevel.open_process(
                [sys.executable, "-m", "pfsfuse.scheduler.worker", pipeline, worker],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            out.close()

    async def _watch(self, pipeline: str, worker: str, proc: trio.Process) -> None:
        code = await proc.wait()
        why = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
        procs = self._procs.get(pipeline, {})
        stopped = procs.get(worker) is not proc
        if self.lost is not None:
            self.lost(pipeline, worker, why, stopped)
        if stopped:
            return
        del procs[worker]
        log.warning("worker %s of %s died (%s)", worker, pipeline, why)
        if self._wanted.get(pipeline):
            await trio.sleep(0.5)  # a worker that cannot start must not spin
            # The pipeline may have been stopped, updated or deleted meanwhile.
            wanted = self._wanted.get(pipeline)
            if wanted:
                await self.ensure(pipeline, wanted)

    def alive(self, pipeline: str, worker: str) -> bool:
        proc = self._procs.get(pipeline, {}).get(worker)
        return proc is not None and proc.returncode is None

    async def stop(self, pipeline: str) -> None:
        self._wanted.pop(pipeline, None)
        procs = self._procs.pop(pipeline, {})
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM)
        for proc in procs.values():
            with trio.move_on_after(10) as scope:
                await proc.wait()
            if scope.cancelled_caught:
                _signal_group(proc, signal.SIGKILL)
                await proc.wait()

    async def stop_all(self) -> None:
        for pipeline in list(self._procs):
            await self.stop(pipeline)


def _signal_group(proc: trio.Process, sig: int) -> None:
    """Workers lead their own process group: their commands go with them."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
