"""What a worker pod's status says, in one line a person can act on: why it cannot start (image
pull failed, unschedulable, crash loop, a missing Secret) or why it ended (OOM-killed, evicted,
node lost, an exit status). Pods are the API's JSON (dicts)."""

from __future__ import annotations

_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def finished(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def trouble(pod: dict) -> str:
    """Why the pod does not run (or ran and ended), or "" if nothing is wrong (yet)."""
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            return f"node lost: {_line(c.get('message')) or c.get('reason')}"
    if status.get("reason") == "Evicted":
        return f"evicted: {_line(status.get('message'))}"
    if status.get("reason") == "NodeLost":
        return f"node lost: {_line(status.get('message'))}"
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return f"unschedulable: {_line(c.get('message'))}"
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for c in containers:
        state = c.get("state") or {}
        waiting, ended = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason") in _PULL:
            return f"image pull failed: {c.get('image')}: {_line(waiting.get('message')) or waiting['reason']}"
        if waiting.get("reason") == "CrashLoopBackOff":
            last = (c.get("lastState") or {}).get("terminated") or {}
            why = last.get("reason") or (f"exit status {last['exitCode']}" if "exitCode" in last else "")
            return f"crash loop: container {c['name']} keeps failing" + (f" ({why})" if why else "")
        if waiting.get("reason") in _CONFIG:
            return f"cannot start container {c['name']}: {_line(waiting.get('message')) or waiting['reason']}"
        if ended.get("reason") == "OOMKilled":
            return f"OOM-killed: container {c['name']} went over its memory limit"
    if status.get("phase") == "Failed":
        for c in containers:
            ended = (c.get("state") or {}).get("terminated") or {}
            if ended.get("exitCode"):
                return f"container {c['name']} exited with status {ended['exitCode']}" + (
                    f" ({ended['reason']})" if ended.get("reason") not in (None, "Error") else ""
                )
        return f"the pod failed: {_line(status.get('message')) or status.get('reason') or 'no reason given'}"
    return ""


def _line(text) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""
