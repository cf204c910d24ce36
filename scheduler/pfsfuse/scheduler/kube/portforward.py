"""`pfs port-forward`: pfsd's port on this machine, through the API server (the Kubernetes client's
port forwarding, a websocket per connection, as `kubectl port-forward` does), so that a laptop
reaches a deployed pfsd without exposing it (its NetworkPolicy lets no one else in).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

from pfsfuse.metadata.errors import FailedPrecondition, NotFound, Unavailable
from pfsfuse.scheduler.kube.client import call

SERVICE = "pfsd"


def pfsd_pod(core, namespace: str) -> tuple[str, int]:
    """The name of a running pod behind pfsd's Service, and the port it serves on."""
    try:
        svc = call(core.read_namespaced_service, SERVICE, namespace)
    except NotFound:
        raise NotFound(f"no pfsd Service in namespace {namespace}: deploy it with `pfs deploy`") from None
    selector = ",".join(f"{k}={v}" for k, v in sorted((svc.spec.selector or {}).items()))
    port = svc.spec.ports[0]
    target = port.target_port if isinstance(port.target_port, int) else port.port
    pods = call(core.list_namespaced_pod, namespace, label_selector=selector).items
    running = sorted(p.metadata.name for p in pods if p.status is not None and p.status.phase == "Running")
    if not running:
        raise FailedPrecondition(f"pfsd is not running in namespace {namespace} (no running pod behind its Service)")
    return running[0], target


class Forwarder:
    """Listens on `host:port` here; each connection gets a stream of its own to the pod's port."""

    def __init__(self, core, namespace: str, pod: str, target: int, host: str = "127.0.0.1", port: int = 0):
        self.core, self.namespace, self.pod, self.target = core, namespace, pod, target
        self.listener = socket.create_server((host, port))
        self.address = self.listener.getsockname()[:2]

    def serve(self, said: Callable[[str], None] = lambda _: None) -> None:
        """Until the listener closes."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn, said), daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _forward(self, conn: socket.socket, said: Callable[[str], None]) -> None:
        from kubernetes.stream import portforward

        try:
            pf = call(
                portforward,
                self.core.connect_get_namespaced_pod_portforward,
                self.pod,
                self.namespace,
                ports=str(self.target),
            )
        except (Unavailable, FailedPrecondition, NotFound) as e:
            said(f"cannot forward a connection: {e}")
            conn.close()
            return
        remote = pf.socket(self.target)
        try:
            _pump(conn, remote)
        finally:
            conn.close()
            pf.close()
            error = pf.error(self.target)
            if error:
                said(f"the forwarded connection failed: {error.strip()}")


def _pump(a: socket.socket, b) -> None:
    """Bytes both ways until either side closes."""
    peers = {a.fileno(): b, b.fileno(): a}
    while True:
        ready, _, _ = select.select(list(peers), [], [])
        for fd in ready:
            source = a if fd == a.fileno() else b
            data = source.recv(1 << 16)
            if not data:
                return
            peers[fd].sendall(data)
