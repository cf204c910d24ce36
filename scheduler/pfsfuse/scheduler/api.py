"""The pipeline API: its interface, its client over the daemon's socket, and the daemon's routes.

As for the storage API, argument and result types come from the annotations of `Pipelines`, so
this interface is the one description of the calls. The scheduler serves them in the daemon, behind
the same front door as the storage API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import msgspec

from pfsfuse.api import wire
from pfsfuse.api.transport import Token, Transport
from pfsfuse.api.types import Count, Seconds
from pfsfuse.metadata.errors import FailedPrecondition
from pfsfuse.metadata.records import Commit, CommitRef
from pfsfuse.scheduler.records import DatumInfo, DatumResult, DatumTask, JobInfo, LogLine, PipelineInfo
from pfsfuse.scheduler.spec import Input, PipelineSpec, atom, atoms


class Pipelines(ABC):
    @abstractmethod
    def create_pipeline(
        self, spec: PipelineSpec, update: bool = False, reprocess: bool = False, restore: bool = False
    ) -> PipelineInfo:
        """`restore`: the pipeline's repos are there already (a restored store), its salt given."""

    @abstractmethod
    def inspect_pipeline(self, name: str) -> PipelineInfo: ...

    @abstractmethod
    def list_pipeline(self) -> list[PipelineInfo]: ...

    @abstractmethod
    def delete_pipeline(self, name: str, force: bool = False) -> None: ...

    @abstractmethod
    def stop_pipeline(self, name: str) -> PipelineInfo: ...

    @abstractmethod
    def start_pipeline(self, name: str) -> PipelineInfo: ...

    @abstractmethod
    def list_job(self, pipeline: str | None = None, input_commit: CommitRef | None = None) -> list[JobInfo]: ...

    @abstractmethod
    def inspect_job(self, job_id: str, block: bool = False) -> JobInfo: ...

    @abstractmethod
    def stop_job(self, job_id: str) -> JobInfo: ...

    @abstractmethod
    def delete_job(self, job_id: str) -> None: ...

    @abstractmethod
    def flush_job(self, commits: list[CommitRef], pipelines: list[str] | None = None) -> list[JobInfo]: ...

    @abstractmethod
    def flush_commit(self, commits: list[CommitRef], repos: list[str] | None = None) -> list[Commit]: ...

    @abstractmethod
    def list_datum(self, job_id: str) -> list[DatumInfo]: ...

    @abstractmethod
    def inspect_datum(self, job_id: str, datum: str) -> DatumInfo: ...

    @abstractmethod
    def restart_datum(self, job_id: str, datum: str) -> DatumInfo: ...

    @abstractmethod
    def get_logs(
        self, pipeline: str | None = None, job: str | None = None, datum: str | None = None
    ) -> list[LogLine]: ...

    # -- for workers
    @abstractmethod
    def next_datums(self, pipeline: str, worker: str, limit: Count = 1, timeout: Seconds = 10.0) -> list[DatumTask]: ...

    @abstractmethod
    def datum_done(self, pipeline: str, worker: str, results: list[DatumResult]) -> None: ...

    @abstractmethod
    def datum_log(self, pipeline: str, worker: str, job: str, key: str, try_: Count, line: Count, text: str) -> None:
        """Lines a running datum's command printed, numbered from `line`."""


METHODS = frozenset(Pipelines.__abstractmethods__)


class RemotePipelines(Pipelines):
    def __init__(self, address: str, token: Token = None):
        self._http = Transport(address, token=token)

    def close(self) -> None:
        self._http.close()

    def _rpc(self, method: str, **args):
        data = self._http.call("POST", f"/pps/{method}", wire.encode_args(method, args, Pipelines))
        return msgspec.json.decode(data, type=wire.hints(method, Pipelines)["return"])

    def create_pipeline(self, spec, update=False, reprocess=False, restore=False):
        return self._rpc("create_pipeline", spec=spec, update=update, reprocess=reprocess, restore=restore)

    def inspect_pipeline(self, name):
        return self._rpc("inspect_pipeline", name=name)

    def list_pipeline(self):
        return self._rpc("list_pipeline")

    def delete_pipeline(self, name, force=False):
        return self._rpc("delete_pipeline", name=name, force=force)

    def stop_pipeline(self, name):
        return self._rpc("stop_pipeline", name=name)

    def start_pipeline(self, name):
        return self._rpc("start_pipeline", name=name)

    def list_job(self, pipeline=None, input_commit=None):
        return self._rpc("list_job", pipeline=pipeline, input_commit=input_commit)

    def inspect_job(self, job_id, block=False):
        return self._rpc("inspect_job", job_id=job_id, block=block)

    def stop_job(self, job_id):
        return self._rpc("stop_job", job_id=job_id)

    def delete_job(self, job_id):
        return self._rpc("delete_job", job_id=job_id)

    def flush_job(self, commits, pipelines=None):
        return self._rpc("flush_job", commits=commits, pipelines=pipelines)

    def flush_commit(self, commits, repos=None):
        return self._rpc("flush_commit", commits=commits, repos=repos)

    def list_datum(self, job_id):
        return self._rpc("list_datum", job_id=job_id)

    def inspect_datum(self, job_id, datum):
        return self._rpc("inspect_datum", job_id=job_id, datum=datum)

    def restart_datum(self, job_id, datum):
        return self._rpc("restart_datum", job_id=job_id, datum=datum)

    def get_logs(self, pipeline=None, job=None, datum=None):
        return self._rpc("get_logs", pipeline=pipeline, job=job, datum=datum)

    def next_datums(self, pipeline, worker, limit=1, timeout=10.0):
        return self._rpc("next_datums", pipeline=pipeline, worker=worker, limit=limit, timeout=timeout)

    def datum_done(self, pipeline, worker, results):
        return self._rpc("datum_done", pipeline=pipeline, worker=worker, results=results)

    def datum_log(self, pipeline, worker, job, key, try_, line, text):
        return self._rpc(
            "datum_log", pipeline=pipeline, worker=worker, job=job, key=key, try_=try_, line=line, text=text
        )


def _input_repos(i: Input | None) -> list[str]:
    """The repos an input reads that exist before the pipeline (not its cron or git repos)."""
    if i is None:
        return []
    if (a := atom(i)) is not None:
        return [a.repo]
    return [r for sub in (i.cross or i.union or []) for r in _input_repos(sub)]


def deletable(scheduler, repo: str) -> None:
    """Refuse to delete a live pipeline's output or meta repo: its pipeline goes first."""
    for p in scheduler.jobs.pipelines():
        if repo in (p.output_repo, p.meta_repo):
            raise FailedPrecondition(f"repo {repo} belongs to pipeline {p.name}: delete the pipeline instead")


def endpoints(scheduler) -> list:
    """The daemon's pipeline routes: every method of `Pipelines`, served by the scheduler, behind
    the front door (`pfsfuse.api.door`). A pipeline's output repo has its name: the pipeline's
    ACL is that repo's."""
    from pfsfuse.api import door  # the daemon's: clients and workers start faster without

    def job_pipeline(job_id: str) -> str:
        return scheduler.jobs.job(job_id).pipeline

    def of_job(need):
        return lambda a: need(job_pipeline(a.job_id))

    def create(a) -> door.Need:
        inputs = door.reads(*_input_repos(a.spec.input))
        return inputs + (door.owns(a.spec.name) if a.update else door.SIGNED_IN)

    def logs(a) -> door.Need:
        if a.job:
            return door.reads(job_pipeline(a.job))
        return door.reads(a.pipeline) if a.pipeline else door.ADMIN

    worker = lambda a: door.Need(subject=f"pipeline:{a.pipeline}")  # noqa: E731
    access = {
        "create_pipeline": create,
        "inspect_pipeline": lambda a: door.reads(a.name),
        "list_pipeline": lambda a: door.SIGNED_IN,
        "delete_pipeline": lambda a: door.owns(a.name),
        "stop_pipeline": lambda a: door.writes(a.name),
        "start_pipeline": lambda a: door.writes(a.name),
        "list_job": lambda a: door.reads(a.pipeline) if a.pipeline else door.SIGNED_IN,
        "inspect_job": of_job(door.reads),
        "stop_job": of_job(door.writes),
        "delete_job": of_job(door.writes),
        "flush_job": lambda a: door.reads(*(c.repo for c in a.commits)),
        "flush_commit": lambda a: door.reads(*(c.repo for c in a.commits)),
        "list_datum": of_job(door.reads),
        "inspect_datum": of_job(door.reads),
        "restart_datum": of_job(door.writes),
        "get_logs": logs,
        "next_datums": worker,
        "datum_done": worker,
        "datum_log": worker,
    }

    def handler(method: str):
        async def call(c: door.Call):
            result = await getattr(scheduler, method)(**wire.as_kwargs(c.args))
            if method == "create_pipeline":
                spec = result.spec
                inputs = [r for r, _, _ in atoms(spec.input, spec.name)]
                c.gate.pipeline_made(
                    c.caller, spec.name, [result.output_repo, result.meta_repo], inputs, new=not c.args.update
                )
            elif method == "delete_pipeline":
                c.gate.pipeline_gone(c.args.name)
            # Listings show only what the caller may read: a pipeline's ACL is its output repo's.
            elif method == "list_pipeline":
                result = [p for p in result if c.may_read(p.name)]
            elif method in ("list_job", "flush_job"):
                result = [j for j in result if c.may_read(j.pipeline)]
            elif method == "flush_commit":
                result = [commit for commit in result if c.may_read(commit.repo)]
            return door.json(result)

        return call

    return [door.Endpoint(f"/pps/{m}", handler(m), access[m], wire.schema(m, Pipelines)) for m in sorted(METHODS)]
