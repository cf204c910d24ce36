"""`pfs port-forward` against the fake API server: the real Kubernetes client's websocket port
forwarding reaches a real daemon serving TCP, as pfsd's pod would, and the `pfs` verbs work
through it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeApi

from helpers import PFS, Daemon, free_port, read_line

LABELS = {"app.kubernetes.io/component": "pfsd"}


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": LABELS},
        "spec": {"containers": [{"name": "pfsd", "image": "pfsfuse/pfsfuse"}]},
    }


@pytest.fixture
def setup(tmp_home: Path) -> Iterator[tuple[FakeApi, Daemon, dict]]:
    port = free_port()
    daemon = Daemon(tmp_home / "home", ["--listen", f"127.0.0.1:{port}", "--insecure"])
    with FakeApi() as api:
        env = {**daemon.env, "KUBECONFIG": api.kubeconfig(tmp_home / "kubeconfig")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.pop("PFS_ADDRESS", None)
        api.forwards[("default", "pfsd-0", 650)] = ("127.0.0.1", port)
        try:
            yield api, daemon.start(), env
        finally:
            try:
                daemon.stop()
            finally:
                daemon.kill()


def _run(env: dict, *args: str, data: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([PFS, *args], env=env, input=data, capture_output=True, timeout=60)


def test_port_forward_reaches_pfsd(setup):
    api, daemon, env = setup
    r = _run(env, "port-forward", "--port", "0")
    assert r.returncode != 0 and b"no pfsd Service in namespace default" in r.stderr
    assert b"Traceback" not in r.stderr
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "pfsd", "namespace": "default"},
        "spec": {"selector": LABELS, "ports": [{"name": "api", "port": 650, "targetPort": 650}]},
    }
    api.create("services", "default", service)
    api.create("pods", "default", _pod("pfsd-0"))
    r = _run(env, "port-forward", "--port", "0")
    assert r.returncode != 0 and b"pfsd is not running in namespace default" in r.stderr
    pod = api.get("pods", "default", "pfsd-0")
    pod["status"] = {"phase": "Running"}
    api.replace("pods", "default", "pfsd-0", pod, status=True)

    proc = subprocess.Popen([PFS, "port-forward", "--port", "0"], env=env, stdout=subprocess.PIPE)
    try:
        first = read_line(proc.stdout).decode()
        assert "to pod pfsd-0 port 650" in first, first
        address = read_line(proc.stdout).decode().strip().removeprefix("export PFS_ADDRESS=")
        here = {**env, "PFS_ADDRESS": address}
        assert _run(here, "create-repo", "images").returncode == 0
        data = bytes(range(256)) * 4096  # 1 MiB, every byte value, both ways
        r = _run(here, "put-file", "images", "master", "a.bin", "-f", "-", data=data)
        assert r.returncode == 0, r.stderr
        assert _run(here, "get-file", "images", "master", "a.bin").stdout == data
        assert b"images" in _run(here, "list-repo").stdout
        assert daemon.client().list_repo()[0].name == "images"  # it went to the daemon
        assert ("GET", "/api/v1/namespaces/default/pods/pfsd-0/portforward") in api.requests
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
