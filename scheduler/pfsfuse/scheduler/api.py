"""The pipeline API: its interface, its client over the daemon's socket, and the daemon's routes.

As for the storage API, argument and result types come from the annotations of `Pipelines`, so
this interface is the one description of the calls. The scheduler serves them in the daemon.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import msgspec

from pfsfuse.api import wire
from pfsfuse.api.transport import Transport
from pfsfuse.metadata.errors import InvalidArgument, PfsError
from pfsfuse.metadata.records import Commit, CommitRef
from pfsfuse.scheduler.records import DatumInfo, DatumResult, DatumTask, JobInfo, LogLine, PipelineInfo
from pfsfuse.scheduler.spec import PipelineSpec

log = logging.getLogger("pfsfuse.scheduler")


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
    def get_logs(self, pipeline: str | None = None, job: str | None = None, datum: str | None = None) -> list[LogLine]: ...

    # -- for workers
    @abstractmethod
    def next_datums(self, pipeline: str, worker: str, limit: int = 1, timeout: float = 10.0) -> list[DatumTask]: ...

    @abstractmethod
    def datum_done(self, pipeline: str, worker: str, results: list[DatumResult]) -> None: ...

    @abstractmethod
    def datum_log(self, pipeline: str, worker: str, job: str, key: str, try_: int, line: int, text: str) -> None:
        """Lines a running datum's command printed, numbered from `line`."""


METHODS = frozenset(Pipelines.__abstractmethods__)


class RemotePipelines(Pipelines):
    def __init__(self, address: str):
        self._http = Transport(address)

    def close(self) -> None:
        self._http.close()

    def _rpc(self, method: str, **args):
        body = msgspec.json.encode({k: v for k, v in args.items() if v is not None})
        data = self._http.call("POST", f"/pps/{method}", body)
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
        return self._rpc("datum_log", pipeline=pipeline, worker=worker, job=job, key=key, try_=try_, line=line, text=text)


def routes(scheduler) -> list:
    """The daemon's pipeline routes: every method of `Pipelines`, served by the scheduler."""
    from starlette.requests import Request  # the daemon's: clients and workers start faster without
    from starlette.responses import Response
    from starlette.routing import Route

    async def call(request: Request) -> Response:
        method = request.path_params["method"]
        try:
            if method not in METHODS:
                raise InvalidArgument(f"unknown pipeline API method {method!r}")
            args = wire.decode_args(method, await request.body(), Pipelines)
            result = await getattr(scheduler, method)(**args)
        except Exception as e:  # noqa: BLE001 - translated at the boundary
            if not isinstance(e, PfsError):
                log.error("pipeline API %s failed", method, exc_info=e)
                e = PfsError(f"internal error: {type(e).__name__}: {e}")
            return Response(wire.error_body(e), status_code=e.status, media_type="application/json")
        return Response(msgspec.json.encode(result), media_type="application/json")

    return [Route("/pps/{method}", call, methods=["POST"])]
