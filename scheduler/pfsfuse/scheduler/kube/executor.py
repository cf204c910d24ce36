"""`KubeExecutor`: workers as pods (see `manifests`), through the official `kubernetes` client.

Each pipeline has a ConfigMap holding its spec and a spec generation (`pfs.io/version`); its
worker pods carry that generation, so a changed spec rolls them and an unchanged one (a daemon
restart) adopts the pods there are. Pods are watched from the list's resourceVersion (a relist
after a broken or expired watch); a pod that ends or vanishes is reported lost (its datums are
retried) and replaced while the pipeline wants workers, after a backoff when pods keep failing.
Why pods do not run (image pull, unschedulable, crash loop, OOM, eviction, RBAC, an unreachable
cluster) is reported to the scheduler as one line (`trouble`), which makes it pipeline state.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time

import msgspec
import trio

from pfsfuse.metadata.errors import NotFound, PfsError, Unavailable
from pfsfuse.scheduler.executor import Executor
from pfsfuse.scheduler.kube import manifests, pods
from pfsfuse.scheduler.kube.client import Objects, call, error
from pfsfuse.scheduler.kube.settings import Settings
from pfsfuse.scheduler.spec import PipelineSpec

log = logging.getLogger("pfsfuse.scheduler.kube")

TICK = 2.0  # seconds between checks that each pipeline has its pods (and its trouble reported)
ORPHANS_AFTER = 10.0  # the scheduler configures every pipeline at start: later, unknown ones are gone
WATCH_SECONDS = 30
_SELECTOR = f"{manifests.COMPONENT_LABEL}=worker,app.kubernetes.io/managed-by=pfsd"


class KubeExecutor(Executor):
    def __init__(self, settings: Settings, api, nursery: trio.Nursery):
        from kubernetes import client

        self.settings = settings
        self.description = (
            f"kubernetes (namespace {settings.namespace}, fuse mode {settings.fuse_mode}): "
            "worker pods run the command in transform.image"
        )
        self.objects = Objects(api)
        self.core = client.CoreV1Api(api)
        self.nursery = nursery
        self._specs: dict[str, PipelineSpec] = {}
        self._versions: dict[str, int] = {}
        self._owners: dict[str, str] = {}  # pipeline -> its ConfigMap's uid
        self._pods: dict[str, dict[str, dict]] = {}  # pipeline -> pod name -> the pod as last seen
        self._stopping: set[str] = set()  # pods we deleted: their end is no failure
        self._wanted: dict[str, int] = {}
        self._failures: dict[str, int] = {}  # pods that failed in a row, for the backoff
        self._retry_at: dict[str, float] = {}
        self._troubles: dict[str, str] = {}
        self._synced = trio.Event()
        self._started = time.monotonic()
        self._running = False

    async def _io(self, fn, *args, **kwargs):
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), abandon_on_cancel=True)

    def _start(self) -> None:
        if not self._running:
            self._running = True
            self.nursery.start_soon(self._watch_loop)
            self.nursery.start_soon(self._tick_loop)

    # -- the Executor interface

    def check(self, spec: PipelineSpec) -> None:
        manifests.worker_pod(spec, 1, "check", self.settings)  # raises for a pod_patch that does not apply

    async def configure(self, spec: PipelineSpec) -> None:
        self._start()
        name = manifests.config_map_name(spec.name)
        ns = self.settings.namespace
        text = msgspec.json.encode(spec).decode()
        try:
            cm = await self._io(self._read_config_map, name)
            version = int(cm["metadata"]["labels"].get(manifests.VERSION_LABEL, "0")) if cm else 0
            if cm is None or (cm.get("data") or {}).get("spec.json") != text:
                version += 1
                body = manifests.config_map(spec, version, self.settings)
                if cm is None:
                    cm = await self._io(self._create_dict, body)
                else:
                    body["metadata"]["resourceVersion"] = cm["metadata"]["resourceVersion"]
                    cm = await self._io(self._replace_dict, body)
        except PfsError as e:
            self._report(spec.name, str(e))
            log.error("cannot record pipeline %s in namespace %s: %s", spec.name, ns, e)
            return
        self._specs[spec.name] = spec
        self._versions[spec.name] = version
        self._owners[spec.name] = cm["metadata"]["uid"]
        await self._synced.wait()
        old = [n for n, p in self._pods.get(spec.name, {}).items() if _version(p) != version]
        await self._delete(old)  # an updated spec rolls the workers

    async def ensure(self, pipeline: str, workers: int) -> None:
        self._start()
        self._wanted[pipeline] = max(workers, self._wanted.get(pipeline, 0))
        await self._synced.wait()
        await self._scale(pipeline)

    def alive(self, pipeline: str, worker: str) -> bool:
        pod = self._pods.get(pipeline, {}).get(worker)
        return pod is not None and worker not in self._stopping and not pod["metadata"].get("deletionTimestamp")

    async def stop(self, pipeline: str) -> None:
        self._wanted.pop(pipeline, None)
        await self._delete(list(self._pods.get(pipeline, {})))

    async def forget(self, pipeline: str) -> None:
        await self.stop(pipeline)
        for d in (self._specs, self._versions, self._owners, self._troubles, self._failures, self._retry_at):
            d.pop(pipeline, None)
        try:
            await self._io(
                self.objects.delete, "ConfigMap", manifests.config_map_name(pipeline), self.settings.namespace
            )
        except PfsError as e:
            log.error("cannot delete the ConfigMap of pipeline %s: %s", pipeline, e)

    async def stop_all(self) -> None:
        """The daemon stops: its pods stay, to be adopted by the next daemon."""

    # -- pods

    async def _scale(self, pipeline: str) -> None:
        spec = self._specs.get(pipeline)
        if spec is None or time.monotonic() < self._retry_at.get(pipeline, 0):
            return
        version = self._versions[pipeline]
        live = [
            n
            for n, p in self._pods.get(pipeline, {}).items()
            if n not in self._stopping and _version(p) == version and not p["metadata"].get("deletionTimestamp")
        ]
        for _ in range(self._wanted.get(pipeline, 0) - len(live)):
            try:
                pod = manifests.worker_pod(spec, version, secrets.token_hex(4), self.settings, self._owners[pipeline])
                created = await self._io(self._create_dict, pod)
            except PfsError as e:
                self._report(pipeline, str(e))
                self._backoff(pipeline)
                log.error("cannot start a worker of %s: %s", pipeline, e)
                return
            self._pods.setdefault(pipeline, {})[created["metadata"]["name"]] = created

    async def _delete(self, names: list[str]) -> None:
        for name in names:
            self._stopping.add(name)
            try:
                await self._io(self.objects.delete, "Pod", name, self.settings.namespace)
            except PfsError as e:
                log.error("cannot delete worker pod %s: %s", name, e)

    def _backoff(self, pipeline: str) -> None:
        n = self._failures[pipeline] = self._failures.get(pipeline, 0) + 1
        self._retry_at[pipeline] = time.monotonic() + min(0.5 * 2 ** (n - 1), 60.0)

    def _report(self, pipeline: str, reason: str) -> None:
        self._troubles[pipeline] = reason
        if self.trouble is not None:
            self.trouble(pipeline, reason)

    def _seen(self, kind: str, pod: dict) -> None:
        """A pod event (or a pod of a fresh list)."""
        meta = pod["metadata"]
        pipeline, name = meta.get("labels", {}).get(manifests.PIPELINE_LABEL), meta["name"]
        if pipeline is None:
            return
        if kind == "DELETED" or pods.finished(pod):
            return self._gone(pipeline, name, pod, deleted=kind == "DELETED")
        self._pods.setdefault(pipeline, {})[name] = pod
        if name in self._stopping:
            return
        reason = pods.trouble(pod)
        if reason:
            self._report(pipeline, reason)
        elif pods.running(pod):
            self._failures.pop(pipeline, None)
            if self._troubles.get(pipeline):
                self._report(pipeline, "")

    def _gone(self, pipeline: str, name: str, pod: dict, deleted: bool) -> None:
        known = self._pods.get(pipeline, {}).pop(name, None)
        stopped = name in self._stopping
        if deleted:
            self._stopping.discard(name)
        elif not stopped:  # an ended pod is deleted: its reason is recorded here
            self._stopping.add(name)
            self.nursery.start_soon(self._delete, [name])
        if known is None and stopped:
            return
        failed = (pod.get("status") or {}).get("phase") != "Succeeded"
        why = pods.trouble(pod) or ("the worker pod was deleted" if deleted else "the worker pod ended")
        if self.lost is not None and (known is not None or not deleted):
            # A worker that ended well (stopped by Kubernetes: a drain, an eviction's SIGTERM)
            # saved what it ran: the datums it still held were not run, and go back untried.
            self.lost(pipeline, name, why, stopped or not failed)
        if not stopped and failed:
            log.warning("worker pod %s of %s: %s", name, pipeline, why)
            self._report(pipeline, why)
            self._backoff(pipeline)

    def _gone_unseen(self, listed: dict[str, dict]) -> None:
        """Pods we knew that a fresh list no longer has (deleted while the watch was down)."""
        for pipeline, known in self._pods.items():
            for name in [n for n in known if n not in listed]:
                self._gone(pipeline, name, known[name], deleted=True)

    async def _watch_loop(self) -> None:
        while True:
            try:
                listed, rv = await self._io(self._list_pods)
                self._gone_unseen(listed)
                for pod in listed.values():
                    self._seen("ADDED", pod)
                self._synced.set()
                await self._io(self._watch, rv)
            except PfsError as e:
                log.error("cannot watch worker pods: %s", e)
                for pipeline in self._wanted:
                    self._report(pipeline, str(e))
                self._synced.set()  # an unreachable cluster must not hang the scheduler
                await trio.sleep(TICK)

    def _watch(self, rv: str) -> None:
        """In a thread: pod events from `rv` until the watch ends or breaks."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        w = watch.Watch()
        try:
            for event in w.stream(
                self.core.list_namespaced_pod,
                self.settings.namespace,
                label_selector=_SELECTOR,
                resource_version=rv,
                timeout_seconds=WATCH_SECONDS,
            ):
                if event["type"] == "ERROR":
                    return  # an expired resourceVersion: list again
                trio.from_thread.run_sync(self._seen, event["type"], event["raw_object"])
        except ApiException as e:
            if e.status != 410:
                raise error(e.status, e.body, e.reason) from None
        except HTTPError as e:
            raise Unavailable(f"the Kubernetes API server is unreachable: {e}") from None
        finally:
            w.stop()

    async def _tick_loop(self) -> None:
        orphans_checked = 0.0
        while True:
            await trio.sleep(TICK)
            for pipeline in list(self._wanted):
                await self._scale(pipeline)
            for pipeline, reason in list(self._troubles.items()):
                if reason:
                    self._report(pipeline, reason)  # a job starting resets the pipeline's state
            now = time.monotonic()
            if now - self._started > ORPHANS_AFTER and now - orphans_checked > 30:
                orphans_checked = now
                await self._remove_orphans()

    async def _remove_orphans(self) -> None:
        """ConfigMaps of pipelines this daemon no longer has (deleted while it was down): deleting
        one deletes its pods."""
        try:
            names = await self._io(
                self.objects.names,
                "ConfigMap",
                self.settings.namespace,
                f"{manifests.COMPONENT_LABEL}=pipeline,app.kubernetes.io/managed-by=pfsd",
            )
            known = {manifests.config_map_name(p) for p in self._specs}
            for name in names:
                if name not in known:
                    log.warning("deleting %s: its pipeline no longer exists", name)
                    await self._io(self.objects.delete, "ConfigMap", name, self.settings.namespace)
        except PfsError as e:
            log.error("cannot look for orphaned pipelines: %s", e)

    # -- blocking calls (in threads), with the API's JSON as dicts

    def _read_config_map(self, name: str) -> dict | None:
        try:
            r = call(self.core.read_namespaced_config_map, name, self.settings.namespace, _preload_content=False)
        except NotFound:
            return None
        return json.loads(r.data)

    def _create_dict(self, obj: dict) -> dict:
        fn = self.core.create_namespaced_pod if obj["kind"] == "Pod" else self.core.create_namespaced_config_map
        return json.loads(call(fn, self.settings.namespace, obj, _preload_content=False).data)

    def _replace_dict(self, obj: dict) -> dict:
        r = call(
            self.core.replace_namespaced_config_map,
            obj["metadata"]["name"],
            self.settings.namespace,
            obj,
            _preload_content=False,
        )
        return json.loads(r.data)

    def _list_pods(self) -> tuple[dict[str, dict], str]:
        r = call(
            self.core.list_namespaced_pod, self.settings.namespace, label_selector=_SELECTOR, _preload_content=False
        )
        found = json.loads(r.data)
        return {p["metadata"]["name"]: p for p in found["items"]}, found["metadata"]["resourceVersion"]


def _version(pod: dict) -> int:
    try:
        return int(pod["metadata"]["labels"][manifests.VERSION_LABEL])
    except (KeyError, ValueError):
        return 0
