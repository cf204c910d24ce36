"""A cluster for the Kubernetes tests: the fake API server, a kubelet simulator, and a real daemon
(`pfs serve --executor kubernetes`) whose kubeconfig points at the fake server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeApi
from kubelet import Kubelet

from helpers import Daemon


class Cluster:
    def __init__(self, api: FakeApi, kubelet: Kubelet, daemon: Daemon):
        self.api, self.kubelet, self.daemon = api, kubelet, daemon

    def pods(self, pipeline: str | None = None) -> list[dict]:
        return self.api.list("pods", "default", f"pfs.io/pipeline={pipeline}" if pipeline else "")


def _cluster(tmp_home: Path, run: bool, nodes=None) -> Iterator[Cluster]:
    with FakeApi() as api:
        home = tmp_home / "home"
        daemon = Daemon(home, ["--executor", "kubernetes"])
        daemon.env = {
            **daemon.env,
            "KUBECONFIG": api.kubeconfig(tmp_home / "kubeconfig"),
            "PFS_KUBE_NAMESPACE": "default",
        }
        daemon.env.pop("KUBERNETES_SERVICE_HOST", None)
        # The workers run here as processes: the suite's pipeline user too (see tests/conftest.py).
        same = {k: os.environ[k] for k in ("PFS_PIPELINE_USER", "PFS_ALLOW_ROOT_COMMANDS") if k in os.environ}
        overrides = {"PFS_ADDRESS": f"unix:{home}/pfs.sock", **same} if run else None
        with Kubelet(api, nodes, run=overrides, scratch=tmp_home / "pods") as kubelet:
            try:
                yield Cluster(api, kubelet, daemon.start())
            finally:
                try:
                    daemon.stop()
                finally:
                    daemon.kill()


@pytest.fixture
def cluster(tmp_home: Path) -> Iterator[Cluster]:
    """Pods run their worker sidecar's command as a local process."""
    yield from _cluster(tmp_home, run=True, nodes={"node-1": {"disk": "ssd"}, "node-2": {"disk": "ssd"}})


@pytest.fixture
def idle_cluster(tmp_home: Path) -> Iterator[Cluster]:
    """Pods run nothing (they only show the states the kubelet simulator gives them)."""
    yield from _cluster(tmp_home, run=False)
