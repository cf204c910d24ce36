"""The official `kubernetes` client, as `pfs deploy` and the Kubernetes executor use it: the
connection (in the cluster or from the kubeconfig), one API object per kind, and every failure
as one line a person can act on (forbidden by RBAC, cluster unreachable, invalid object, ...).
"""

from __future__ import annotations

import json
import os

from pfsfuse.metadata.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PfsError, Unavailable


class Forbidden(FailedPrecondition):
    """The ServiceAccount or kubeconfig user lacks a right (RBAC)."""


# kind -> (API class, the snake_case name in the client's method names, namespaced)
KINDS = {
    "ServiceAccount": ("CoreV1Api", "service_account", True),
    "Secret": ("CoreV1Api", "secret", True),
    "ConfigMap": ("CoreV1Api", "config_map", True),
    "Service": ("CoreV1Api", "service", True),
    "Pod": ("CoreV1Api", "pod", True),
    "Role": ("RbacAuthorizationV1Api", "role", True),
    "RoleBinding": ("RbacAuthorizationV1Api", "role_binding", True),
    "ClusterRole": ("RbacAuthorizationV1Api", "cluster_role", False),
    "ClusterRoleBinding": ("RbacAuthorizationV1Api", "cluster_role_binding", False),
    "StatefulSet": ("AppsV1Api", "stateful_set", True),
    "DaemonSet": ("AppsV1Api", "daemon_set", True),
    "NetworkPolicy": ("NetworkingV1Api", "network_policy", True),
}


def api_client(context: str | None = None):
    """A client for the cluster this process runs in, else for the kubeconfig's context."""
    from kubernetes import client, config

    try:
        if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return client.ApiClient()
        return config.new_client_from_config(context=context)
    except config.ConfigException as e:
        raise Unavailable(f"no Kubernetes cluster configured: {_first_line(e)}") from None


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


class Objects:
    """Create, read, replace and delete objects of the kinds in KINDS, given as dicts."""

    def __init__(self, api):
        import kubernetes.client

        self._apis = {name: getattr(kubernetes.client, name)(api) for name in {k[0] for k in KINDS.values()}}

    def _call(self, verb: str, kind: str, name: str | None, namespace: str | None, body=None, **kwargs):
        api, snake, namespaced = KINDS[kind]
        fn = getattr(self._apis[api], f"{verb}_namespaced_{snake}" if namespaced else f"{verb}_{snake}")
        args = (
            ([name] if name is not None else [])
            + ([namespace] if namespaced else [])
            + ([body] if body is not None else [])
        )
        return call(fn, *args, **kwargs)

    def read(self, kind: str, name: str, namespace: str | None = None):
        return self._call("read", kind, name, namespace)

    def create(self, obj: dict):
        return self._call("create", obj["kind"], None, obj["metadata"].get("namespace"), obj)

    def replace(self, obj: dict):
        return self._call("replace", obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"), obj)

    def names(self, kind: str, namespace: str, label_selector: str = "") -> list[str]:
        found = self._call("list", kind, None, namespace, label_selector=label_selector)
        return [o.metadata.name for o in found.items]

    def delete(self, kind: str, name: str, namespace: str | None = None, background: bool = True) -> bool:
        """Whether it was there."""
        try:
            self._call("delete", kind, name, namespace, propagation_policy="Background" if background else "Foreground")
            return True
        except NotFound:
            return False

    def apply(self, obj: dict) -> str:
        """Create `obj`, or replace what is there; returns 'created' or 'configured'."""
        meta = obj["metadata"]
        try:
            current = self.read(obj["kind"], meta["name"], meta.get("namespace"))
        except NotFound:
            self.create(obj)
            return "created"
        body = {**obj, "metadata": {**meta, "resourceVersion": current.metadata.resource_version}}
        if obj["kind"] == "Service":  # the cluster IP stays the one it was given
            body["spec"] = {**obj["spec"], "clusterIP": current.spec.cluster_ip}
        self.replace(body)
        return "configured"


def call(fn, *args, **kwargs):
    """`fn(*args)`, with the client's failures as our errors, each in one line."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        raise error(e.status, e.body, e.reason) from None
    except HTTPError as e:
        raise Unavailable(f"the Kubernetes API server is unreachable: {_first_line(e)}") from None
    except ValueError as e:  # a body the client's models refuse
        raise InvalidArgument(f"Kubernetes refused the object: {_first_line(e)}") from None


def error(status: int, body, reason: str = "") -> PfsError:
    """Our error for an API server's answer."""
    try:
        message = json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        message = reason or f"HTTP {status}"
    if status in (401, 403):
        return Forbidden(f"forbidden by RBAC: {message}")
    if status == 404:
        return NotFound(message)
    if status == 409:
        return AlreadyExists(message)
    if status in (400, 422):
        return InvalidArgument(f"Kubernetes refused the object: {message}")
    return Unavailable(f"the Kubernetes API server failed ({status}): {message}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
