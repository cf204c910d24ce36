"""A kubelet (and scheduler) simulator over the fake API server: it binds pods to nodes whose
labels match their nodeSelector, and then, by the user container's image:
    "pull-error"  waiting in ErrImagePull, then ImagePullBackOff
    "crashloop"   the worker sidecar in CrashLoopBackOff
    "oom"         the user container OOM-killed: the pod Failed
    "evicted"     the pod Failed, Evicted for memory pressure
    anything else the pod Running; with `run` set, its worker sidecar's command runs for real as a
                  local process, running datums itself (the pod Succeeded or Failed with its exit
                  status)
`lose_node` takes a node away with its pods, as the node lifecycle controller does. A deleted pod's
containers get SIGTERM and, after its grace period, SIGKILL (in a thread of their own); its final
status (Succeeded or Failed) is recorded before it goes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

from fakeapi import ApiError, FakeApi


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    def __init__(
        self,
        api: FakeApi,
        nodes: dict[str, dict[str, str]] | None = None,
        run: dict[str, str] | None = None,
        scratch=None,
    ):
        """`run`: environment overrides for the worker processes (PFS_ADDRESS of the test's daemon);
        without it pods just run. `scratch`: where each pod's emptyDirs go."""
        self.api = api
        self.run, self.scratch = run, scratch
        self.procs: dict[tuple[str, str], subprocess.Popen] = {}
        self.ending: dict[tuple[str, str], threading.Thread] = {}  # pods stopping within their grace
        self.stopped = threading.Event()
        for name, labels in (nodes or {"node-1": {}}).items():
            api.create(
                "nodes",
                "",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                },
            )
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self._thread.join(10)
        for proc in self.procs.values():
            _kill(proc)
        for thread in list(self.ending.values()):
            thread.join()

    def lose_node(self, node: str) -> None:
        n = self.api.get("nodes", "", node)
        n["status"]["conditions"] = [
            {
                "type": "Ready",
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
            }
        ]
        self.api.replace("nodes", "", node, n, status=True)
        for pod in self.api.list("pods", fields=f"spec.nodeName={node}"):
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if key in self.procs:
                _kill(self.procs.pop(key))
            pod["status"].setdefault("conditions", []).append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                    "message": f"Taint manager: deleting due to NoExecute taint: node {node} is unreachable",
                    "lastTransitionTime": _now(),
                }
            )
            self._status(pod)
            self.api.delete("pods", *key, grace=0)  # no kubelet left to confirm: the pod GC forces it

    def _loop(self) -> None:
        while not self.stopped.is_set():
            pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in self.api.list("pods")}
            for key in [k for k in self.procs if k not in pods]:  # deleted: the containers stop
                _kill(self.procs.pop(key))
            for key, pod in pods.items():
                try:
                    self._step(key, pod)
                except ApiError:
                    pass  # changed or deleted meanwhile: the next round sees it
            time.sleep(0.05)

    def _step(self, key, pod: dict) -> None:
        spec, status = pod["spec"], pod.get("status", {})
        if pod["metadata"].get("deletionTimestamp"):  # stop the containers, then the pod goes
            if key in self.procs:  # within the grace period, in the background: others go on
                grace = pod["metadata"].get("deletionGracePeriodSeconds", 30)
                thread = threading.Thread(target=self._stop, args=(key, self.procs.pop(key), grace), daemon=True)
                self.ending[key] = thread
                thread.start()
            elif key not in self.ending:
                self.api.delete("pods", *key, grace=0)
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        if not spec.get("nodeName"):
            return self._schedule(pod)
        user = spec["containers"][0]
        image = user["image"]
        if key in self.procs:
            if self.procs[key].poll() is not None:
                self._ended(key, pod, self.procs.pop(key))
            return
        if status.get("phase") == "Running":
            return
        if image == "pull-error":
            reason = "ImagePullBackOff" if _waiting(status, "user") == "ErrImagePull" else "ErrImagePull"
            if _waiting(status, "user") == "ImagePullBackOff":
                return
            msg = (
                f'Back-off pulling image "{image}"'
                if reason == "ImagePullBackOff"
                else f'failed to pull and unpack image "docker.io/library/{image}:latest": '
                "pull access denied, repository does not exist"
            )
            pod["status"] = {
                **status,
                "phase": "Pending",
                "containerStatuses": [_cstatus("user", pod, {"waiting": {"reason": reason, "message": msg}})],
            }
        elif image == "crashloop":
            if _waiting(status, "pfs-worker", init=True) == "CrashLoopBackOff":
                return
            pod["status"] = {
                **status,
                "phase": "Pending",
                "initContainerStatuses": [
                    _cstatus(
                        "pfs-worker",
                        pod,
                        {
                            "waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": "back-off 40s restarting failed container=pfs-worker",
                            }
                        },
                        restarts=4,
                        last={"terminated": {"exitCode": 1, "reason": "Error"}},
                    )
                ],
            }
        elif image == "oom":
            pod["status"] = {
                **status,
                "phase": "Failed",
                "containerStatuses": [_cstatus("user", pod, {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
            }
        elif image == "evicted":
            pod["status"] = {
                **status,
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 20Mi.",
            }
        else:
            if self.run is not None:
                self.procs[key] = self._start(pod)
            pod["status"] = {
                **status,
                "phase": "Running",
                "startTime": _now(),
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [_cstatus("user", pod, {"running": {"startedAt": _now()}}, ready=True)],
            }
        self._status(pod)

    def _ended(self, key, pod: dict, proc: subprocess.Popen) -> None:
        """The pod's status once its containers ended: Succeeded or Failed by the exit status."""
        code = proc.wait()
        self._log(key, proc)
        state = {
            "terminated": {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
            }
        }
        pod["status"] = {
            **pod.get("status", {}),
            "phase": "Succeeded" if code == 0 else "Failed",
            "initContainerStatuses": [_cstatus("pfs-worker", pod, state)],
        }
        self._status(pod)

    def _stop(self, key, proc: subprocess.Popen, grace: float) -> None:
        """A deleted pod: its containers stopped (SIGTERM, SIGKILL after the grace period), its
        final status recorded, and then it goes."""
        try:
            _kill(proc, grace)
            pod = self.api.get("pods", *key)
            if pod is not None:
                self._ended(key, pod, proc)
                self.api.delete("pods", *key, grace=0)
        except ApiError:
            pass  # gone meanwhile
        finally:
            self.ending.pop(key, None)

    def _schedule(self, pod: dict) -> None:
        wanted = pod["spec"].get("nodeSelector") or {}
        nodes = self.api.list("nodes")
        fit = [
            n
            for n in nodes
            if all(n["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
            and any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        ]
        if not fit:
            msg = (
                f"0/{len(nodes)} nodes are available: {len(nodes)} node(s) didn't match Pod's node affinity/selector. "
                "preemption: 0/1 nodes are available."
            )
            conds = pod.get("status", {}).get("conditions") or []
            if any(c.get("reason") == "Unschedulable" for c in conds):
                return
            pod["status"] = {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}],
            }
            return self._status(pod)
        pod["spec"]["nodeName"] = fit[0]["metadata"]["name"]
        self.api.replace("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], pod)

    def _start(self, pod: dict) -> subprocess.Popen:
        """The worker sidecar's command, as a process here, with the pod's environment (Secrets
        resolved) and `run`'s overrides; its emptyDirs are directories under `scratch`."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "pfs-worker")
        env = {"PATH": os.environ["PATH"]}
        for e in sidecar.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                env[e["name"]] = e["value"]
                continue
            secret = self.api.get("secrets", ns, ref["name"]) or {}
            if ref["key"] in (secret.get("data") or {}):
                import base64

                env[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        home = self.scratch / name
        home.mkdir(parents=True, exist_ok=True)
        env |= {"PFS_HOME": str(home), "PFS_CACHE_DIR": str(home / "cache"), **self.run}
        # No user container here: the worker runs datums itself, as the local executor's do
        # (runckubelet.py runs them in the user's container, through the launcher).
        env.pop("PFS_LAUNCHER_SOCKET", None)
        cmd = [sys.executable if sidecar["command"][0] == "python" else sidecar["command"][0], *sidecar["command"][1:]]
        out = open(home / "log", "wb")
        try:
            return subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            out.close()

    def _log(self, key, proc) -> None:
        try:
            self.api.logs[(*key, "pfs-worker")] = (self.scratch / key[1] / "log").read_text(errors="replace")
        except OSError:
            pass

    def _status(self, pod: dict) -> None:
        self.api.replace("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], pod, status=True)


def _cstatus(
    name: str, pod: dict, state: dict, ready: bool = False, restarts: int = 0, last: dict | None = None
) -> dict:
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    image = next(c["image"] for c in containers if c["name"] == name)
    out = {"name": name, "image": image, "imageID": "", "ready": ready, "restartCount": restarts, "state": state}
    if last:
        out["lastState"] = last
    return out


def _waiting(status: dict, name: str, init: bool = False) -> str:
    for c in status.get("initContainerStatuses" if init else "containerStatuses") or []:
        if c["name"] == name:
            return (c.get("state", {}).get("waiting") or {}).get("reason", "")
    return ""


def _kill(proc: subprocess.Popen, grace: float = 5) -> None:
    """As a container runtime stops a container: SIGTERM to the group, SIGKILL after a grace."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
