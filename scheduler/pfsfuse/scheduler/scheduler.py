"""The scheduler: turns new input commits into jobs, jobs into datums for workers, and datum outputs
into one output commit with provenance.

It runs in the daemon, on trio, and talks to the store only through the client API. Every datum's
output lands atomically in the pipeline's meta repo (`__<pipeline>`) under the datum's key, so a
datum is done exactly when its key is there: that is what a restarted daemon resumes from, and how
unchanged datums of later jobs are skipped. A job's output commit is built apart from its branch
and becomes the branch head only when the job succeeds.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator

import msgspec
import trio

from pfsfuse.api.client import Client
from pfsfuse.api.types import Copy, Delete
from pfsfuse.metadata.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PfsError
from pfsfuse.metadata.records import BranchRef, Commit, CommitRef
from pfsfuse.scheduler import crons, incremental, outputs
from pfsfuse.scheduler import datums as datum_math
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.executor import Executor
from pfsfuse.scheduler.jobs import JobStore
from pfsfuse.scheduler.queues import LiveOutput, Queue, output_lines
from pfsfuse.scheduler.records import (
    DatumInfo,
    DatumResult,
    DatumTask,
    JobInfo,
    LogLine,
    PipelineInfo,
    meta_repo,
)

log = logging.getLogger("pfsfuse.scheduler")

DATUMS_BRANCH = "datums"
ACTIVE = ("running", "standby", "crashing")  # states whose inputs start jobs (crashing: workers fail to start)
RETRY_BACKOFF, MAX_RETRY_BACKOFF = 0.2, 10.0  # seconds before a failed datum's next try, doubling


class Scheduler:
    def __init__(self, client: Client, jobs: JobStore, executor: Executor, wait_change, cpus: int | None = None):
        """`wait_change(generation, timeout)` blocks until the store changed (returns the new
        generation); it comes from the store, which the scheduler otherwise reaches by `client`."""
        self.client = client
        self.jobs = jobs
        self.executor = executor
        self._wait_change = wait_change
        self.cpus = cpus or os.cpu_count() or 1
        self._queues: dict[str, Queue] = {}
        self._running: dict[str, trio.CancelScope] = {}  # pipeline -> its job's scope
        self._crons: dict[str, trio.CancelScope] = {}
        self._wake = trio.Event()
        self._jobs_changed = trio.Event()
        self._reconciling = trio.Lock()
        self._nursery: trio.Nursery | None = None

    async def _io(self, fn, *args, **kwargs):
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def wake(self) -> None:
        self._wake.set()

    def _job_event(self) -> None:
        self._jobs_changed.set()
        self._jobs_changed = trio.Event()

    # -- the service -----------------------------------------------------------------------------

    def _service(self) -> trio.Nursery:
        """The nursery of `run`, where jobs and crons run."""
        assert self._nursery is not None, "the scheduler is not running"
        return self._nursery

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for p in self.jobs.pipelines():
                self._queues[p.name] = Queue()
                self._start_crons(p)
                await self.executor.configure(p.spec)
            await self._resume()
            nursery.start_soon(self._watch_store)
            task_status.started()
            try:
                while True:
                    await self._reconcile()
                    with trio.move_on_after(1.0):
                        await self._wake.wait()
                    self._wake = trio.Event()
            finally:
                with trio.CancelScope(shield=True):
                    await self.executor.stop_all()

    async def _watch_store(self) -> None:
        generation = -1
        while True:
            generation = await trio.to_thread.run_sync(self._wait_change, generation, 1.0, abandon_on_cancel=True)
            self.wake()

    async def _resume(self) -> None:
        """Jobs a stopped daemon left running go on where they were: their processed datums are
        in their meta commit, their output commit is not on a branch yet."""
        for p in self.jobs.pipelines():
            for j in self.jobs.jobs(p.name):
                if j.done:
                    continue
                if p.state not in ACTIVE or p.version != j.pipeline_version:
                    await self._end(p, j, "killed", "the daemon stopped during the job")
                    continue
                if (
                    j.output_commit
                    and await self._io(self._head, p.output_repo, p.spec.output_branch) == j.output_commit
                ):
                    await self._end(p, j, "success")  # the daemon stopped just after publishing it
                    continue
                try:
                    heads = {
                        (c.repo, b): await self._io(self.client.inspect_commit, c.repo, c.id)
                        for c in j.inputs
                        for r, b, _ in specs.atoms(p.spec.input, p.name)
                        if r == c.repo
                    }
                except NotFound:
                    await self._end(p, j, "killed", "an input commit was deleted")
                    continue
                self._start_job(p, msgspec.structs.replace(j, restarts=j.restarts + 1), heads)

    async def _reconcile(self) -> None:
        """Start a job for every running pipeline whose inputs moved, if it has none running."""
        async with self._reconciling:
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        for p in self.jobs.pipelines():
            if p.state not in ACTIVE or p.name in self._running:
                continue
            try:
                heads = await self._io(self._heads, p)
            except PfsError as e:
                self._set_state(p, "failure", str(e))
                continue
            present = sorted((c.ref for c in heads.values() if c is not None), key=lambda r: (r.repo, r.id))
            if any(c is not None and c.finished is None for c in heads.values()):
                continue  # an input is being written: wait for its commit
            if not present or present == p.last_inputs:
                if p.state == "running" and self._idle(p):
                    self._set_state(p, "standby")
                    await self.executor.stop(p.name)
                continue
            crashing = p.state == "crashing"  # a new job does not make failing workers start
            p = msgspec.structs.replace(
                p, last_inputs=present, state="crashing" if crashing else "running", reason=p.reason if crashing else ""
            )
            self.jobs.put_pipeline(p)
            job = JobInfo(self.jobs.new_job_id(), p.name, time.time(), p.version, inputs=present)
            self.jobs.put_job(job)
            self._start_job(p, job, heads)

    def _idle(self, p: PipelineInfo) -> bool:
        """Whether the pipeline's workers should go: at once with `standby`, or once no job has
        run for `scale_down_threshold`."""
        if p.spec.standby or not p.spec.scale_down_threshold:
            return p.spec.standby
        last = next(iter(self.jobs.jobs(p.name)), None)
        since = (last.finished or time.time()) if last is not None else p.created
        return time.time() - since >= specs.duration(p.spec.scale_down_threshold)

    def _heads(self, p: PipelineInfo) -> dict[tuple[str, str], Commit | None]:
        heads: dict[tuple[str, str], Commit | None] = {}
        for repo, branch, _ in specs.atoms(p.spec.input, p.name):
            try:
                heads[(repo, branch)] = self.client.inspect_commit(repo, branch)
            except NotFound:
                self.client.inspect_repo(repo)  # a missing repo is a failure, a headless branch not
                heads[(repo, branch)] = None
        return heads

    def _set_state(self, p: PipelineInfo, state: str, reason: str = "") -> None:
        if (p.state, p.reason) != (state, reason):
            self.jobs.put_pipeline(msgspec.structs.replace(p, state=state, reason=reason))

    def _start_job(self, p: PipelineInfo, job: JobInfo, heads) -> None:
        scope = trio.CancelScope()
        self._running[p.name] = scope
        self._service().start_soon(self._job_task, p, job, heads, scope)

    # -- running a job -----------------------------------------------------------------------------

    async def _job_task(self, p: PipelineInfo, job: JobInfo, heads, scope: trio.CancelScope) -> None:
        try:
            with scope:
                timeout = specs.duration(p.spec.job_timeout) if p.spec.job_timeout else math.inf
                with trio.fail_after(timeout):
                    job = await self._run_job(p, job, heads)
            if scope.cancelled_caught:
                job = await self._end(p, self.jobs.job(job.id), "killed", "the job was stopped")
        except trio.TooSlowError:
            job = await self._end(
                p, self.jobs.job(job.id), "failure", f"the job ran longer than its job_timeout {p.spec.job_timeout}"
            )
        except PfsError as e:
            job = await self._end(p, self.jobs.job(job.id), "failure", str(e))
        except Exception as e:
            log.exception("job %s of %s failed", job.id, p.name)
            job = await self._end(p, self.jobs.job(job.id), "failure", f"internal error: {e}")
        finally:
            self._running.pop(p.name, None)
            q = self._queues.get(p.name)
            if q is not None:
                q.results.pop(job.id, None)
                q.pending = deque(t for t in q.pending if t.job != job.id)
                q.live = {k: v for k, v in q.live.items() if k[0] != job.id}
            self._job_event()
            self.wake()

    async def _run_job(self, p: PipelineInfo, job: JobInfo, heads) -> JobInfo:
        spec = p.spec
        prev_meta = await self._io(self._head, p.meta_repo, DATUMS_BRANCH)
        if not job.output_commit:  # a new job (a resumed one has its commits already)
            out_parent = await self._io(self._head, p.output_repo, spec.output_branch)
            out = await self._io(self.client.start_commit, p.output_repo, None, out_parent, "", job.inputs)
            meta = await self._io(self.client.start_commit, p.meta_repo, None, prev_meta, f"job {job.id}")
            # A job's meta commit holds only its own datums: the skipped ones are copied in.
            await self._io(self.client.write_files, p.meta_repo, meta.id, [Delete("")])
            job = msgspec.structs.replace(job, output_commit=out.id, meta_commit=meta.id, state="running")
            self.jobs.put_job(job)
        all_datums = await self._io(datum_math.datums, self.client, spec, heads)
        done = await self._io(self._keys_in, p.meta_repo, job.meta_commit)
        prev_keys = await self._io(self._keys_in, p.meta_repo, prev_meta, spec.incremental) if prev_meta else {}
        tasks, skipped, infos = [], [], []
        deltas = incremental.Deltas(self.client, p.meta_repo, f"changed inputs of job {job.id}")
        for inputs in all_datums:
            key = datum_math.key(spec.salt, inputs, with_content=not spec.incremental)
            if key in prev_keys and (not spec.incremental or prev_keys[key] == datum_math.fingerprint(inputs)):
                if key not in done:
                    skipped.append(key)
                infos.append(DatumInfo(job.id, key, "skipped", inputs))
                continue
            if key in done:  # processed before the daemon restarted
                infos.append(DatumInfo(job.id, key, "success", inputs))
                continue
            task = DatumTask(
                job.id,
                key,
                inputs,
                job.meta_commit,
                job.output_commit,
                incremental=spec.incremental,
                fingerprint=datum_math.fingerprint(inputs) if spec.incremental else "",
            )
            if key in prev_keys:  # an incremental datum run before
                task = await self._io(deltas.plan, task, prev_meta)
            tasks.append(task)
            infos.append(DatumInfo(job.id, key, "pending", inputs))
        keys = [d.key for d in infos]
        if len(set(keys)) != len(keys):
            raise FailedPrecondition("two datums have the same inputs: check the glob patterns of crossed inputs")
        await self._io(self._drop_deltas, p, job)  # a resumed job's: made again
        job = msgspec.structs.replace(job, deltas=deltas.commits)
        self.jobs.put_job(job)
        await self._io(deltas.write)
        if skipped:
            ops = [Copy(k, p.meta_repo, prev_meta, k) for k in skipped]
            await self._io(self.client.write_files, p.meta_repo, job.meta_commit, ops)
        counts = {state: sum(d.state == state for d in infos) for state in ("skipped", "success")}
        job = msgspec.structs.replace(
            job, total=len(infos), skipped=counts["skipped"], processed=counts["success"], state="running"
        )
        self.jobs.put_job(job, infos)
        self._job_event()
        if tasks:
            job = await self._process(p, job, tasks)
            if job.failed:
                failed = next(d for d in self.jobs.datums(job.id) if d.state == "failed")
                raise FailedPrecondition(f"datum {failed.key} failed: {failed.reason}")
        job = msgspec.structs.replace(job, state="merging")
        self.jobs.put_job(job)
        await self._io(outputs.merge, self.client, p, job, keys)
        if spec.egress is not None:
            job = msgspec.structs.replace(job, state="egress")
            self.jobs.put_job(job)
            await self._io(outputs.egress, self.client, p, job)
        return await self._end(
            p, job, "success", "" if all_datums else "the input's glob matched nothing: the output is empty"
        )

    def _head(self, repo: str, branch: str) -> str | None:
        try:
            b = self.client.inspect_branch(repo, branch)
        except NotFound:
            return None
        return b.head

    def _keys_in(self, repo: str, commit: str, fingerprints: bool = False) -> dict[str, str]:
        """The datum keys present in a meta commit, with the input fingerprint each recorded
        (incremental pipelines only: it tells whether a datum changed)."""
        keys = {f.path: "" for f in self.client.list_file(repo, commit, "")}
        if fingerprints:
            for k in keys:
                try:
                    keys[k] = b"".join(self.client.get_file(repo, commit, f"{k}/fingerprint")).decode()
                except NotFound:
                    pass
        return keys

    async def _process(self, p: PipelineInfo, job: JobInfo, tasks: list[DatumTask]) -> JobInfo:
        """Hand the datums to workers and gather their results, retrying failed datums."""
        q = self._queues.setdefault(p.name, Queue())
        send, receive = trio.open_memory_channel(math.inf)
        q.results[job.id] = send
        q.pending.extend(tasks)
        q.notify()
        await self.executor.ensure(p.name, min(specs.workers(p.spec, self.cpus), len(tasks)))
        left = {t.key: t for t in tasks}
        async with receive:
            while left:
                results = [await receive.receive()]
                while True:  # and every other result at hand: one index write for them all
                    try:
                        results.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                infos = []
                for result in results:
                    task = left.get(result.key)
                    if task is not None:  # else a result of a datum already dropped
                        job, info = self._settle(p, q, job, left, task, result)
                        infos.append(info)
                if infos:
                    self.jobs.put_job(job, infos, sync=False)  # on the loop: no fsync per datum
                    self._job_event()
        return job

    def _settle(
        self,
        p: PipelineInfo,
        q: Queue,
        job: JobInfo,
        left: dict[str, DatumTask],
        task: DatumTask,
        result: DatumResult,
    ) -> tuple[JobInfo, DatumInfo]:
        """Account for one datum's result: done, queued again while it has tries left, or failed,
        which drops the job's datums not started yet. Returns the job with its counts updated and
        the datum's record."""
        info = DatumInfo(
            job.id,
            result.key,
            "success" if result.ok else "failed",
            task.inputs,
            task.try_,
            result.started,
            result.finished,
            result.reason,
            result.downloaded,
            result.uploaded,
            result.log,
            result.log_line,
        )
        if result.ok:
            del left[result.key]
            job = msgspec.structs.replace(
                job,
                processed=job.processed + 1,
                downloaded=job.downloaded + result.downloaded,
                uploaded=job.uploaded + result.uploaded,
            )
        elif task.try_ < p.spec.datum_tries and not result.final:
            retry = msgspec.structs.replace(task, try_=task.try_ + 1)
            left[result.key] = retry
            self._service().start_soon(self._retry, q, left, retry)
            job = msgspec.structs.replace(job, restarts=job.restarts + 1)
            info = msgspec.structs.replace(info, state="pending")
        else:
            del left[result.key]
            job = msgspec.structs.replace(job, failed=job.failed + 1)
            # No new datums for a failing job (nor retries): let the running ones finish, then fail.
            q.pending = deque(t for t in q.pending if t.job != job.id)
            running = {key for (j, key) in q.running if j == job.id}
            for key in [k for k in left if k not in running]:
                del left[key]
        q.live.pop((job.id, result.key), None)  # its log is the datum's now
        return job, info

    async def _retry(self, q: Queue, left: dict[str, DatumTask], task: DatumTask) -> None:
        """Queue a failed datum again after a backoff that doubles with each try (whatever made
        it fail may need a moment to pass), unless its job has let it go meanwhile."""
        await trio.sleep(min(RETRY_BACKOFF * 2 ** (task.try_ - 2), MAX_RETRY_BACKOFF))
        if left.get(task.key) is task:
            q.pending.append(task)
            q.notify()

    async def _end(self, p: PipelineInfo, job: JobInfo, state: str, reason: str = "") -> JobInfo:
        """Finish a job: on success its output commit becomes the output branch's head; otherwise
        it is deleted, so a half-made output never becomes a head. Either way the datums that
        were processed stay in the meta repo for the next job to reuse."""
        if job.done:
            return job
        with trio.CancelScope(shield=True):
            try:
                await self._io(self._drop_deltas, p, job)
                if job.meta_commit:
                    await self._io(self._finish_quietly, p.meta_repo, job.meta_commit)
                    await self._io(self.client.create_branch, p.meta_repo, DATUMS_BRANCH, job.meta_commit)
                if job.output_commit:
                    if state == "success":
                        await self._io(self._finish_quietly, p.output_repo, job.output_commit)
                        await self._io(
                            self.client.create_branch, p.output_repo, p.spec.output_branch, job.output_commit
                        )
                    else:
                        await self._io(self._delete_quietly, p.output_repo, job.output_commit)
            except PfsError as e:
                state, reason = "failure", f"{reason + '; ' if reason else ''}{e}"
            job = msgspec.structs.replace(job, state=state, reason=reason, finished=time.time(), deltas=[])
            self.jobs.put_job(job)
            if state == "success" and p.spec.enable_stats:
                await self._io(outputs.stats, self.client, self.jobs, p, job)
        return job

    def _drop_deltas(self, p: PipelineInfo, job: JobInfo) -> None:
        for commit in job.deltas:
            self._delete_quietly(p.meta_repo, commit)

    def _finish_quietly(self, repo: str, commit: str) -> None:
        try:
            self.client.finish_commit(repo, commit)
        except FailedPrecondition:
            pass  # already finished: a resumed job

    def _delete_quietly(self, repo: str, commit: str) -> None:
        try:
            self.client.delete_commit(repo, commit)
        except NotFound:
            pass

    # -- the API the CLI uses ---------------------------------------------------------------------

    async def create_pipeline(
        self, spec: specs.PipelineSpec, update: bool = False, reprocess: bool = False, restore: bool = False
    ) -> PipelineInfo:
        spec = specs.validate(spec)
        self.executor.check(spec)
        try:
            old = self.jobs.pipeline(spec.name)
        except NotFound:
            old = None
        if old is not None and not update:
            raise AlreadyExists(f"pipeline {spec.name} already exists; use update-pipeline")
        if old is None and update:
            raise NotFound(f"pipeline {spec.name} not found")
        if restore and (update or not spec.salt):
            raise InvalidArgument("restoring a pipeline creates it, with the salt it was extracted with")
        # The salt keys the datums: a new one (--reprocess) processes every datum again.
        salt = os.urandom(16).hex() if reprocess else spec.salt or (old.spec.salt if old else os.urandom(16).hex())
        spec = msgspec.structs.replace(spec, salt=salt)
        await self._io(self._prepare_repos, spec, old is None and not restore)
        if old is not None:
            await self._stop_job(spec.name)
            info = msgspec.structs.replace(
                old, spec=spec, version=old.version + 1, state="running", reason="", last_inputs=[]
            )
        else:
            # A restored pipeline's output head came from the inputs it has: no job for them.
            last = await self._io(self._output_inputs, spec) if restore else []
            info = PipelineInfo(spec.name, spec, time.time(), last_inputs=last)
        await self.executor.configure(spec)  # old workers go before a job of the new spec starts
        self.jobs.put_pipeline(info)
        self._queues.setdefault(spec.name, Queue())
        if not spec.standby:  # a worker is ready when the first job comes; the job starts the others it needs
            await self.executor.ensure(spec.name, 1)
        self._stop_crons(spec.name)
        self._start_crons(info)
        self.wake()
        return info

    def _output_inputs(self, spec: specs.PipelineSpec) -> list[CommitRef]:
        head = self._head(spec.name, spec.output_branch)
        if head is None:
            return []
        repos = {repo for repo, _, _ in specs.atoms(spec.input, spec.name)}
        prov = self.client.inspect_commit(spec.name, head).provenance
        return sorted((c for c in prov if c.repo in repos), key=lambda r: (r.repo, r.id))

    def _prepare_repos(self, spec: specs.PipelineSpec, new: bool) -> None:
        """Check the inputs; make the output, meta and cron repos and the output's provenance."""
        cron_repos = {specs.cron_repo(c, spec.name) for c in crons.inputs(spec.input)}
        existing = {r.name for r in self.client.list_repo()}
        inputs = [(repo, branch) for repo, branch, _ in specs.atoms(spec.input, spec.name)]
        for repo, _ in inputs:
            if repo == spec.name:
                raise InvalidArgument(f"pipeline {spec.name} cannot take its own output as input")
            if repo not in cron_repos and repo not in existing:
                raise NotFound(f"input repo {repo} not found")
        made = []
        if new:
            for repo in (spec.name, meta_repo(spec.name)):
                if repo in existing:
                    raise AlreadyExists(f"repo {repo} already exists: pipeline {spec.name} needs it")
        for repo, description in [
            *[(r, f"cron input of {spec.name}") for r in sorted(cron_repos)],
            (spec.name, f"output of pipeline {spec.name}"),
            (meta_repo(spec.name), f"datum outputs of pipeline {spec.name}"),
        ]:
            if repo not in existing:
                self.client.create_repo(repo, description)
                made.append(repo)
        prov = [BranchRef(repo, branch) for repo, branch in inputs]
        try:
            self.client.create_branch(spec.name, spec.output_branch, None, prov)
        except InvalidArgument as e:
            for repo in reversed(made):
                self.client.delete_repo(repo, force=True)
            raise InvalidArgument(f"pipeline {spec.name} would make a cycle: {e}") from None

    async def inspect_pipeline(self, name: str) -> PipelineInfo:
        return self._described(self.jobs.pipeline(name))

    async def list_pipeline(self) -> list[PipelineInfo]:
        return [self._described(p) for p in self.jobs.pipelines()]

    def _described(self, p: PipelineInfo) -> PipelineInfo:
        return msgspec.structs.replace(p, executor=self.executor.description)

    async def delete_pipeline(self, name: str, force: bool = False) -> None:
        self.jobs.pipeline(name)
        await self._stop_job(name)
        self._stop_crons(name)
        await self.executor.forget(name)
        self._queues.pop(name, None)
        self.jobs.delete_pipeline(name)
        for repo in (name, meta_repo(name)):
            try:
                await self._io(self.client.delete_repo, repo, force)
            except NotFound:
                pass

    async def stop_pipeline(self, name: str) -> PipelineInfo:
        async with self._reconciling:  # a job being started now would write the old state back
            p = self.jobs.pipeline(name)
            await self._stop_job(name)
            self._set_state(p, "paused", "stopped with stop-pipeline")
        await self.executor.stop(name)
        return self.jobs.pipeline(name)

    async def start_pipeline(self, name: str) -> PipelineInfo:
        p = self.jobs.pipeline(name)
        self._set_state(p, "running")
        self.wake()
        return self.jobs.pipeline(name)

    async def _stop_job(self, pipeline: str) -> None:
        scope = self._running.get(pipeline)
        if scope is not None:
            scope.cancel()
            while pipeline in self._running:
                await self._jobs_changed.wait()

    async def list_job(self, pipeline: str | None = None, input_commit: CommitRef | None = None) -> list[JobInfo]:
        out = []
        for j in self.jobs.jobs(pipeline):
            if input_commit is not None and input_commit not in j.inputs:
                continue
            out.append(j)
        return out

    async def inspect_job(self, job_id: str, block: bool = False) -> JobInfo:
        while True:
            j = self.jobs.job(job_id)
            if j.done or not block:
                return j
            await self._jobs_changed.wait()

    async def stop_job(self, job_id: str) -> JobInfo:
        j = self.jobs.job(job_id)
        if not j.done and j.pipeline in self._running:
            await self._stop_job(j.pipeline)
        return self.jobs.job(job_id)

    async def delete_job(self, job_id: str) -> None:
        j = await self.stop_job(job_id)
        self.jobs.delete_job(j.id)

    async def list_datum(self, job_id: str) -> list[DatumInfo]:
        self.jobs.job(job_id)
        return self.jobs.datums(job_id)

    async def inspect_datum(self, job_id: str, datum: str) -> DatumInfo:
        return self.jobs.datum(job_id, datum)

    async def restart_datum(self, job_id: str, datum: str) -> DatumInfo:
        """Give a running job's datum another try."""
        d = self.jobs.datum(job_id, datum)
        j = self.jobs.job(job_id)
        q = self._queues.get(j.pipeline)
        if q is None or j.done:
            raise FailedPrecondition(f"job {job_id} is not running")
        running = q.running.pop((job_id, datum), None)
        q.live.pop((job_id, datum), None)  # its next run prints it again
        if running is not None:
            q.pending.appendleft(running[1])
            q.notify()
        return d

    async def flush_job(self, commits: list[CommitRef], pipelines: list[str] | None = None) -> list[JobInfo]:
        """Wait for the jobs that process `commits` (and the jobs downstream of their outputs)."""
        found: dict[str, JobInfo] = {}
        todo = list(commits)
        while todo:
            c = todo.pop()
            for p in self.jobs.pipelines():
                if pipelines and p.name not in pipelines:
                    continue
                if c.repo not in {repo for repo, _, _ in specs.atoms(p.spec.input, p.name)}:
                    continue
                await self._quiet(p.name)
                for j in self.jobs.jobs(p.name):
                    if c in j.inputs and j.id not in found:
                        j = await self.inspect_job(j.id, block=True)
                        found[j.id] = j
                        if j.state == "success":
                            todo.append(CommitRef(p.output_repo, j.output_commit))
        return sorted(found.values(), key=lambda j: j.started)

    async def flush_commit(self, commits: list[CommitRef], repos: list[str] | None = None) -> list[Commit]:
        jobs = await self.flush_job(commits)
        out = []
        for j in jobs:
            if j.state == "success" and (not repos or j.pipeline in repos):
                out.append(await self._io(self.client.inspect_commit, j.pipeline, j.output_commit))
        return out

    async def _quiet(self, pipeline: str) -> None:
        """Until the pipeline has started a job for its current inputs and that job is done."""
        while True:
            await self._reconcile()
            if pipeline not in self._running:
                p = self.jobs.pipeline(pipeline)
                heads = await self._io(self._heads, p)
                if p.state not in ACTIVE or all(c is None or c.finished for c in heads.values()):
                    return
            with trio.move_on_after(0.5):
                await self._jobs_changed.wait()

    async def get_logs(
        self, pipeline: str | None = None, job: str | None = None, datum: str | None = None
    ) -> list[LogLine]:
        """The logs of finished datums, and what running ones printed so far."""
        jobs = [self.jobs.job(job)] if job else list(self.jobs.jobs(pipeline))
        lines = []
        for j in jobs:
            if pipeline and j.pipeline != pipeline:
                continue
            q = self._queues.get(j.pipeline)
            for d in self.jobs.datums(j.id):
                if datum and d.key != datum:
                    continue
                for n, line in enumerate(output_lines(d.log), d.log_line):
                    lines.append(LogLine(j.pipeline, j.id, d.key, d.finished, line, d.tries, n))
                if d.reason and d.state == "failed":
                    lines.append(LogLine(j.pipeline, j.id, d.key, d.finished, f"datum failed: {d.reason}", d.tries, -1))
                live = q.live.get((j.id, d.key)) if q is not None else None
                if live is not None:
                    lines += [LogLine(j.pipeline, j.id, d.key, ts, line, live.try_, n) for ts, n, line in live.lines]
        return lines

    # -- the API workers use -----------------------------------------------------------------------

    async def next_datums(self, pipeline: str, worker: str, limit: int = 1, timeout: float = 10.0) -> list[DatumTask]:
        q = self._queues.get(pipeline)
        if q is None:
            raise NotFound(f"pipeline {pipeline} not found")
        with trio.move_on_after(timeout):
            while not q.pending:
                await q.changed.wait()
        if not self.executor.alive(pipeline, worker):
            return []  # a request left over from a worker that is gone: it cannot take work
        out: list[DatumTask] = []
        while q.pending and len(out) < limit:
            t = q.pending.popleft()
            q.running[(t.job, t.key)] = (worker, t)
            out.append(t)
        if out:
            self.executor.running(pipeline)
        return out

    async def datum_done(self, pipeline: str, worker: str, results: list[DatumResult]) -> None:
        q = self._queues.get(pipeline)
        if q is None:
            return
        for r in results:
            q.running.pop((r.job, r.key), None)
            send = q.results.get(r.job)
            if send is not None:
                send.send_nowait(r)

    async def datum_log(self, pipeline: str, worker: str, job: str, key: str, try_: int, line: int, text: str) -> None:
        q = self._queues.get(pipeline)
        held = q.running.get((job, key)) if q is not None else None
        if q is None or held is None or held[0] != worker or held[1].try_ != try_:
            return  # late: the datum is no longer this worker's
        live = q.live.get((job, key))
        if live is None or live.try_ != try_:
            live = q.live[(job, key)] = LiveOutput(try_)
        live.add(line, text)

    def worker_lost(self, pipeline: str, worker: str, why: str, stopped: bool = False) -> None:
        """A worker is gone: the datums it held go back to the queue, as a failed try if it
        died, as they were if it was stopped."""
        q = self._queues.get(pipeline)
        if q is None:
            return
        for (job, key), (w, task) in list(q.running.items()):
            if w != worker:
                continue
            del q.running[(job, key)]
            send = q.results.get(job)
            if send is None:
                continue
            if stopped:
                q.pending.appendleft(task)
                q.notify()
            else:
                now = time.time()
                send.send_nowait(DatumResult(job, key, False, f"the worker died ({why})", now, now))

    def worker_trouble(self, pipeline: str, reason: str) -> None:
        """The executor says why a pipeline's workers do not run ("" once they do)."""
        try:
            p = self.jobs.pipeline(pipeline)
        except NotFound:
            return
        if reason and p.state in ("running", "crashing"):
            self._set_state(p, "crashing", reason)
        elif not reason and p.state == "crashing":
            self._set_state(p, "running")
        if reason.startswith("crash loop"):
            self._fail_waiting(pipeline, f"the pipeline's workers cannot run: {reason}")

    def _fail_waiting(self, pipeline: str, reason: str) -> None:
        """Fail the datums waiting for a worker, for good: their jobs end, saying why, instead of
        waiting for workers that never come."""
        q = self._queues.get(pipeline)
        if q is None:
            return
        waiting, q.pending = list(q.pending), deque()
        now = time.time()
        for t in waiting:
            send = q.results.get(t.job)
            if send is not None:
                send.send_nowait(DatumResult(t.job, t.key, False, reason, now, now, final=True))

    # -- cron inputs ---------------------------------------------------------------------------------

    def _start_crons(self, p: PipelineInfo) -> None:
        for c in crons.inputs(p.spec.input):
            scope = trio.CancelScope()
            self._crons[f"{p.name}/{c.name}"] = scope
            self._service().start_soon(crons.run, self.client, p, c, scope)

    def _stop_crons(self, pipeline: str) -> None:
        for name in [n for n in self._crons if n.startswith(pipeline + "/")]:
            self._crons.pop(name).cancel()


def _parents(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path
