"""Where workers run. The scheduler asks an executor for N workers per pipeline; workers then pull
datums from the daemon's pipeline API, so the same worker runs as a local process or in a pod.

`LocalExecutor` runs workers as processes on this machine (a Kubernetes executor creates pods
instead). A worker that dies is reported to the scheduler, whose datums it held then count as
failed tries, and is started again while the pipeline still needs it, after a backoff that grows
while workers keep dying young. CRASH_LOOP young deaths in a row are a crash loop: the pipeline
is `crashing`, saying why, and its jobs fail rather than wait for workers that never come.
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

from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.scheduler import identity
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.spec import PipelineSpec

log = logging.getLogger("pfsfuse.scheduler")

YOUNG = 10.0  # seconds: a worker dying sooner did not get going
CRASH_LOOP = 5  # young deaths in a row
BACKOFF, MAX_BACKOFF = 0.5, 30.0  # seconds before a dead worker is replaced, doubling while they die young


class Executor(ABC):
    lost = None  # set by the daemon: lost(pipeline, worker, why, stopped) when a worker is gone
    # Set by the daemon: token(pipeline) is the token a worker runs with, as PFS_AUTH_TOKEN
    # (None while auth is not active).
    token: Callable[[str], str | None] | None = None
    trouble = None  # set by the daemon: trouble(pipeline, reason) when its workers cannot run ("" once they do)

    # Where workers run, as inspect-pipeline shows it.
    description = "local (processes on the daemon's host)"

    def check(self, spec: PipelineSpec) -> None:  # noqa: B027 (a default: no check)
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

    def running(self, pipeline: str) -> None:  # noqa: B027 (a default: nothing to clear)
        """A worker of the pipeline took work: a crash loop the executor reported is over."""

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
        self._specs: dict[str, PipelineSpec] = {}  # every pipeline's: their workers share the machine
        self._young_deaths: dict[str, int] = {}  # pipeline -> young deaths in a row
        self._started: dict[str, float] = {}  # worker -> when it was started

    def check(self, spec: PipelineSpec) -> None:
        identity.resolve(spec.transform.user)  # a user this machine has, and root only if allowed
        cpus = os.cpu_count() or 1
        others = sum(specs.workers(s, cpus) for name, s in self._specs.items() if name != spec.name)
        wanted, most = specs.workers(spec, cpus), max_workers()
        if others + wanted > most:
            raise InvalidArgument(
                f"pipeline spec: `parallelism_spec` asks for {wanted} workers and the other pipelines have "
                f"{others}: this machine runs at most {most} (pfs serve --max-workers)"
            )

    async def configure(self, spec: PipelineSpec) -> None:
        self._specs[spec.name] = spec
        await self.stop(spec.name)

    async def forget(self, pipeline: str) -> None:
        self._specs.pop(pipeline, None)
        await self.stop(pipeline)

    async def ensure(self, pipeline: str, workers: int) -> None:
        self._wanted[pipeline] = max(workers, self._wanted.get(pipeline, 0))
        procs = self._procs.setdefault(pipeline, {})
        while len(procs) < self._wanted[pipeline]:
            self._serial += 1
            worker = f"{pipeline}-{self._serial}"
            procs[worker] = await self._spawn(pipeline, worker)
            self._started[worker] = trio.current_time()
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
        young = trio.current_time() - self._started.pop(worker, 0.0) < YOUNG
        deaths = self._young_deaths[pipeline] = self._young_deaths.get(pipeline, 0) + 1 if young else 0
        if deaths == CRASH_LOOP and self.trouble is not None:
            self.trouble(pipeline, f"crash loop: its workers keep dying ({why}): {_last_line(self.home, worker)}")
        if self._wanted.get(pipeline):
            await trio.sleep(min(BACKOFF * 2 ** max(deaths - 1, 0), MAX_BACKOFF))  # no spinning
            # The pipeline may have been stopped, updated or deleted meanwhile.
            wanted = self._wanted.get(pipeline)
            if wanted:
                await self.ensure(pipeline, wanted)

    def alive(self, pipeline: str, worker: str) -> bool:
        proc = self._procs.get(pipeline, {}).get(worker)
        return proc is not None and proc.returncode is None

    def running(self, pipeline: str) -> None:
        """A worker of the pipeline took work: whatever killed the ones before, it is over."""
        if self._young_deaths.pop(pipeline, 0) >= CRASH_LOOP and self.trouble is not None:
            self.trouble(pipeline, "")

    async def stop(self, pipeline: str) -> None:
        self._wanted.pop(pipeline, None)
        self._young_deaths.pop(pipeline, None)
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


def max_workers() -> int:
    """The most workers all pipelines together may ask of this machine: $PFS_MAX_WORKERS (pfs
    serve --max-workers), else 8 per CPU and at least 64."""
    return int(os.environ.get("PFS_MAX_WORKERS") or max(64, 8 * (os.cpu_count() or 1)))


def _last_line(home: Path, worker: str) -> str:
    """The last line a worker logged: most often why it died."""
    try:
        with open(home / "workers" / f"{worker}.log", "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 4096, 0))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no log"


def _signal_group(proc: trio.Process, sig: int) -> None:
    """Workers lead their own process group: their commands go with them."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
