"""One worker pod, for real (`python runcpod.py PLAN.json`, as root; runckubelet.py writes the plan):

- each emptyDir is a host directory (mode 0777, as the kubelet makes them);
- the init containers run in order, each a runc container of its image's rootfs (the launcher's
  copy from "our image": the busybox rootfs with the built launcher at the path our image has it);
- the native sidecar (the Python worker, which cannot run in a busybox rootfs) is a process in a
  mount namespace of its own over the host's root file system (privileged: with every capability
  and /dev/fuse; otherwise with none at all, the device-plugin mode): its /pfs is the
  pod's `pfs` emptyDir, bound with shared propagation (Bidirectional), so that the FUSE file
  system it mounts there shows in the host's directory; its other mounts are host directories
  that the plan's environment overrides name (a container's `subPath` mount binds that directory
  of the volume);
- once the sidecar's startup probe passes (the ready mark exists), the user container: a runc
  container of a busybox rootfs without Python, its volumes bound in, /pfs with slave propagation
  (HostToContainer), running the launcher; asking for `smarter-devices/fuse`, it gets /dev/fuse,
  as the device plugin would give it.
The pod ends with the sidecar (its exit status is the pod's); SIGTERM stops it as a kubelet does:
the user container first, then the sidecar.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# containerd's default capabilities, which pods get unless their securityContext says otherwise
CAPS = (
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL "
    "AUDIT_WRITE"
)
GRACE = 3.0  # within the kubelet's 5 s before its SIGKILL


def main() -> int:
    plan = json.loads(Path(sys.argv[1]).read_text())
    pod, dirs = plan["pod"], {k: Path(v) for k, v in plan["volumes"].items()}
    state, bundles = Path(plan["runc_root"]), Path(plan["bundles"])
    name = pod["metadata"]["name"]
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o777)
    pfs = dirs["pfs"]
    subprocess.run(["mount", "--bind", str(pfs), str(pfs)], check=True)
    subprocess.run(["mount", "--make-shared", str(pfs)], check=True)
    children: list[subprocess.Popen] = []
    stopping = False

    def stop(*_):
        # As the kubelet stops a pod: SIGTERM to the user container first, to the sidecar once
        # that has ended (the loop below), the kubelet's SIGKILL after the grace period.
        nonlocal stopping
        stopping = True
        if len(children) > 1 and children[1].poll() is None:
            subprocess.run(["runc", "--root", str(state), "kill", f"{name}-user", "TERM"], stderr=subprocess.DEVNULL)
        elif children and children[0].poll() is None:
            children[0].terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        init = [c for c in pod["spec"].get("initContainers", []) if c.get("restartPolicy") != "Always"]
        for c in init:
            r = subprocess.run(_runc(state, bundles, name, c, plan, dirs))
            if r.returncode != 0:
                print(f"runcpod: init container {c['name']} exited {r.returncode}", flush=True)
                return 1
        sidecar = next(c for c in pod["spec"]["initContainers"] if c.get("restartPolicy") == "Always")
        children.append(_sidecar(sidecar, plan, pfs))
        ready = Path(plan["ready"])
        while "startupProbe" in sidecar and not ready.exists():  # the startup probe
            if children[0].poll() is not None or stopping:
                return children[0].wait()
            time.sleep(0.05)
        [user] = pod["spec"]["containers"]
        children.append(subprocess.Popen(_runc(state, bundles, name, user, plan, dirs)))
        while children[0].poll() is None:  # the pod ends with its containers
            if children[1].poll() is not None:
                children[0].terminate()
            time.sleep(0.05)
        return children[0].returncode
    finally:
        if children and children[0].poll() is None:
            children[0].terminate()
        for proc in children:
            try:
                proc.wait(GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            subprocess.run(
                ["runc", "--root", str(state), "delete", "--force", f"{name}-{c['name']}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        subprocess.run(["umount", "-l", str(pfs)])


def _sidecar(c: dict, plan: dict, pfs: Path) -> subprocess.Popen:
    """The worker in its own mount namespace: /pfs there is a peer of the emptyDir's directory."""
    env = {**plan["env"][c["name"]], **plan["sidecar_env"]}
    argv = [sys.executable if c["command"][0] == "python" else c["command"][0], *c["command"][1:]]
    script = 'mount --bind "$0" /pfs && exec "$@"'
    if not (c.get("securityContext") or {}).get("privileged"):
        # Unprivileged (device-plugin mode): not one capability once /pfs is bound. (It stays uid
        # 0 to read the host directories standing in for its volumes.)
        argv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *argv]
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script, str(pfs), *argv], env=env
    )


def _runc(state: Path, bundles: Path, pod: str, c: dict, plan: dict, dirs: dict[str, Path]) -> list[str]:
    """`runc run` of container `c`, from a bundle made of its image's rootfs and the pod's volumes."""
    cid = f"{pod}-{c['name']}"
    bundle = bundles / cid
    bundle.mkdir(parents=True, exist_ok=True)
    image = plan["images"][c["image"]]
    config = json.loads(Path(plan["base_config"]).read_text())
    config["root"] = {"path": image["rootfs"], "readonly": True}
    config["hostname"] = pod
    sc = c.get("securityContext") or {}
    uid = sc.get("runAsUser", 0)
    config["process"] |= {
        "terminal": False,
        "args": [*c.get("command", []), *c.get("args", [])],
        "env": [f"{k}={v}" for k, v in plan["env"][c["name"]].items()],
        "cwd": c.get("workingDir") or "/",
        "user": {"uid": uid, "gid": sc.get("runAsGroup", uid)},
        "noNewPrivileges": sc.get("allowPrivilegeEscalation") is False,
    }
    given = sc.get("capabilities") or {}
    caps = set() if "ALL" in given.get("drop", []) else set(CAPS.split()) - set(given.get("drop", []))
    caps = sorted(f"CAP_{c}" for c in caps | set(given.get("add", [])))
    config["process"]["capabilities"] = dict.fromkeys(("bounding", "effective", "permitted"), caps)
    mounts = [m for m in config["mounts"] if m["destination"] != "/tmp"]
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]})
    for src, dest in image.get("binds", {}).items():
        mounts.append({"destination": dest, "type": "bind", "source": src, "options": ["bind", "ro"]})
    for m in c.get("volumeMounts", []):
        how = {"HostToContainer": "rslave", "Bidirectional": "rshared"}.get(m.get("mountPropagation", ""), "rprivate")
        options = ["rbind", how, *(["ro"] if m.get("readOnly") else [])]
        source = dirs[m["name"]] / m.get("subPath", "")
        source.mkdir(mode=0o777, exist_ok=True)  # as the kubelet makes a missing subPath
        mounts.append({"destination": m["mountPath"], "type": "bind", "source": str(source), "options": options})
    config["mounts"] = mounts
    if "smarter-devices/fuse" in (c.get("resources") or {}).get("limits", {}):  # what the device plugin gives
        config["linux"].setdefault("devices", []).append(
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0}
        )
        config["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"}
        )
    (bundle / "config.json").write_text(json.dumps(config))
    return ["runc", "--root", str(state), "run", "--bundle", str(bundle), cid]


if __name__ == "__main__":
    sys.exit(main())
