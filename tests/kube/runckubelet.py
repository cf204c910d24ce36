"""A kubelet that runs the pods bound to it for real, each with runcpod.py: runc containers from
a busybox rootfs without Python (the user's image, and "our image" for the launcher's copy), and
the worker sidecar in a mount namespace of its own. Scheduling, deletion and the pod's status are
the simulator's (kubelet.py). Needs root, runc, busybox-static and a static C library.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kubelet import Kubelet

from pfsfuse.scheduler.kube.manifests import LAUNCHER_IMAGE_PATH, SIDECAR

REPO = Path(__file__).parents[2]
RUNCPOD = Path(__file__).with_name("runcpod.py")
MOUNTPOINTS = ("pfs", "pfs-bin", "run/pfs", "tmp", "usr/local/lib/pfs")


def missing() -> str:
    """Why the pods cannot run here, or ""."""
    if os.geteuid() != 0:
        return "not root"
    for tool, package in (("runc", "runc"), ("busybox", "busybox-static"), ("gcc", "gcc"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"no {tool} (Debian: apt-get install {package})"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return ""


def build_images(where: Path) -> dict[str, Path]:
    """A busybox rootfs (no Python: the user's image) and the static launcher."""
    rootfs = where / "busybox"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
    subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    for d in MOUNTPOINTS:
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / LAUNCHER_IMAGE_PATH.lstrip("/")).touch()
    assert not list(rootfs.rglob("python*")), "the user's image must not have Python"
    launcher = where / "launcher"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(launcher), str(REPO / "packaging/launcher/launcher.c")], check=True
    )
    spec = where / "spec"
    spec.mkdir()
    subprocess.run(["runc", "spec"], cwd=spec, check=True)
    return {"rootfs": rootfs, "launcher": launcher, "config": spec / "config.json"}


class RuncKubelet(Kubelet):
    def __init__(self, api, scratch: Path, run: dict[str, str], images: dict[str, Path], nodes=None):
        """`images`: from build_images; every image name runs as the busybox rootfs."""
        super().__init__(api, nodes, run=run, scratch=scratch)
        self.images = images
        self.runc_root = scratch / "runc"

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        # A pod runner killed before its own cleanup leaves its /pfs bind (and FUSE) mounted.
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4]
            if target.startswith(f"{self.scratch}/") and target.endswith("/volumes/pfs"):
                subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)

    def _start(self, pod: dict) -> subprocess.Popen:
        name = pod["metadata"]["name"]
        home = self.scratch / name
        home.mkdir(parents=True, exist_ok=True)
        volumes = {v["name"]: str(home / "volumes" / v["name"]) for v in pod["spec"]["volumes"]}
        self._secrets(pod, volumes)
        containers = [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]
        rootfs = {"rootfs": str(self.images["rootfs"])}
        ours = {**rootfs, "binds": {str(self.images["launcher"]): LAUNCHER_IMAGE_PATH}}
        sidecar = {
            "PATH": os.environ["PATH"],
            "PFS_HOME": str(home / "volumes" / "pfs-scratch"),
            "PFS_CACHE_DIR": str(home / "volumes" / "pfs-cache"),
            "PFS_LAUNCHER_SOCKET": volumes["pfs-run"] + "/worker.sock",
            "PFS_STORE_DIR": volumes["pfs-store"],
            **(self.run or {}),
        }
        plan = {
            "pod": pod,
            "volumes": volumes,
            "runc_root": str(self.runc_root),
            "bundles": str(home / "bundles"),
            "base_config": str(self.images["config"]),
            "ready": volumes["pfs-run"] + "/ready",
            "images": {c["image"]: ours if c["name"] in ("pfs-launcher", SIDECAR) else rootfs for c in containers},
            "env": {c["name"]: self._env(pod, c) for c in containers},
            "sidecar_env": sidecar,
        }
        (home / "plan.json").write_text(json.dumps(plan))
        out = open(home / "log", "wb")
        try:
            return subprocess.Popen(
                [sys.executable, str(RUNCPOD), str(home / "plan.json")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def _env(self, pod: dict, c: dict) -> dict[str, str]:
        """A container's environment, Secrets resolved (optional ones that are missing left out)."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                env[e["name"]] = e["value"]
                continue
            data = (self.api.get("secrets", pod["metadata"]["namespace"], ref["name"]) or {}).get("data") or {}
            if ref["key"] in data:
                env[e["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def _secrets(self, pod: dict, volumes: dict[str, str]) -> None:
        """Secret volumes are directories of their keys' files."""
        for v in pod["spec"]["volumes"]:
            if "secret" not in v:
                continue
            d = Path(volumes[v["name"]])
            d.mkdir(parents=True, exist_ok=True)
            secret = self.api.get("secrets", pod["metadata"]["namespace"], v["secret"]["secretName"]) or {}
            for key, value in (secret.get("data") or {}).items():
                (d / key).write_bytes(base64.b64decode(value))
