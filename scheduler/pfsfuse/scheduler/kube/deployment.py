"""The objects of a deployment (`pfs deploy`): pfsd as a one-replica StatefulSet with a volume for
its RocksDB index, its Service, ServiceAccounts and RBAC for pfsd and the workers, the storage and
token Secrets, NetworkPolicies, and the FUSE device plugin's DaemonSet where that mode is chosen.

pfsd listens on TCP only with the token from the `pfs-auth` Secret (PFS_AUTH_TOKEN), which the
worker sidecars present too; `pfs port-forward` style access goes through the API server.
"""

from __future__ import annotations

import json
import secrets

import msgspec

from pfsfuse.home import CONFIG_FORMAT, StoreConfig
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.scheduler.kube.manifests import (
    AUTH_TOKEN_ENV,
    AUTH_TOKEN_KEY,
    COMPONENT_LABEL,
    CREDENTIAL_ENV,
    MANAGED,
    SIDECAR_UID,
    STORE_DIR,
)
from pfsfuse.scheduler.kube.settings import Settings

PORT = 650  # pachd's port
DATA_DIR = "/var/lib/pfs"
DEVICE_PLUGIN_IMAGE = "registry.gitlab.com/arm-research/smarter/smarter-device-manager:v1.20.15"


class Storage(msgspec.Struct, frozen=True):
    """Where chunks go, and the credentials pfsd and the worker sidecars need for it."""

    url: str  # file://, s3://, gs:// or az://
    credentials: dict[str, str] = {}  # CREDENTIAL_ENV names (and google.json, a key file)
    role_annotations: dict[str, str] = {}  # on the ServiceAccounts: a cloud IAM role instead of keys


class Deployment(msgspec.Struct, kw_only=True, frozen=True):
    settings: Settings
    storage: Storage
    cluster_roles: bool = False  # pfsd's rights as a ClusterRole (all namespaces) instead of a Role
    metadata_size: str = "10Gi"
    storage_class: str = ""
    device_plugin: bool = True  # with fuse mode device-plugin: deploy the plugin's DaemonSet too


def _meta(name: str, d: Deployment | None, component: str) -> dict:
    """Metadata of a deployed object: in the namespace unless `d` is None (cluster-scoped)."""
    out = {
        "name": name,
        "labels": {**MANAGED, "app.kubernetes.io/managed-by": "pfs-deploy", COMPONENT_LABEL: component},
    }
    if d is not None:
        out["namespace"] = d.settings.namespace
    return out


def objects(d: Deployment, store_json: bytes, token: str) -> list[dict]:
    """Every object, in the order they are applied (the reverse is the order of deletion)."""
    s = d.settings
    ns = s.namespace
    pfsd_labels = {**MANAGED, "app.kubernetes.io/managed-by": "pfs-deploy", COMPONENT_LABEL: "pfsd"}
    out: list[dict] = []
    for name in ("pfsd", s.worker_service_account):
        sa: dict = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(name, d, "pfsd" if name == "pfsd" else "worker"),
        }
        if d.storage.role_annotations:
            sa["metadata"]["annotations"] = dict(d.storage.role_annotations)
        if name != "pfsd":
            sa["automountServiceAccountToken"] = False
        out.append(sa)
    rules = [
        {
            "apiGroups": [""],
            "resources": ["pods", "configmaps"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods/log", "events"], "verbs": ["get", "list", "watch"]},
    ]
    kind = "ClusterRole" if d.cluster_roles else "Role"
    role_meta = _meta("pfsd", d if not d.cluster_roles else None, "pfsd")
    if d.cluster_roles:
        role_meta["name"] = f"pfsd-{ns}"
    out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": role_meta, "rules": rules})
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": f"{kind}Binding",
            "metadata": dict(role_meta),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_meta["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": "pfsd", "namespace": ns}],
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": _meta(s.storage_secret, d, "storage"),
            "stringData": {"store.json": store_json.decode(), **d.storage.credentials},
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": _meta(s.auth_secret, d, "auth"),
            "stringData": {AUTH_TOKEN_KEY: token},
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("pfsd", d, "pfsd"),
            "spec": {"selector": pfsd_labels, "ports": [{"name": "api", "port": PORT, "targetPort": PORT}]},
        }
    )
    out.append(_stateful_set(d, pfsd_labels))
    out += _network_policies(d, pfsd_labels)
    if s.fuse_mode == "device-plugin" and d.device_plugin:
        out += _device_plugin(d)
    return out


def _stateful_set(d: Deployment, pfsd_labels: dict) -> dict:
    s = d.settings
    env = [
        {"name": "PFS_HOME", "value": DATA_DIR},
        {"name": AUTH_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": s.auth_secret, "key": AUTH_TOKEN_KEY}}},
        *({"name": k, "value": v} for k, v in s.env().items()),
        *(
            {"name": k, "valueFrom": {"secretKeyRef": {"name": s.storage_secret, "key": k, "optional": True}}}
            for k in CREDENTIAL_ENV
        ),
    ]
    mounts = [{"name": "data", "mountPath": DATA_DIR}, {"name": "store", "mountPath": STORE_DIR, "readOnly": True}]
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": SIDECAR_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": d.metadata_size}}}
    if d.storage_class:
        claim["storageClassName"] = d.storage_class
    pod = {
        "serviceAccountName": "pfsd",
        "securityContext": {"fsGroup": SIDECAR_UID},
        "initContainers": [
            {
                # A new volume gets the deployment's store.json (its seed and storage URL); an
                # existing store keeps its own.
                "name": "store-config",
                "image": s.image,
                "imagePullPolicy": s.image_pull_policy,
                "command": ["cp", "-n", f"{STORE_DIR}/store.json", f"{DATA_DIR}/store.json"],
                "volumeMounts": mounts,
                "securityContext": restricted,
            }
        ],
        "containers": [
            {
                "name": "pfsd",
                "image": s.image,
                "imagePullPolicy": s.image_pull_policy,
                "command": ["pfs", "serve", "--listen", f"0.0.0.0:{PORT}", "--executor", "kubernetes"],
                "env": env,
                "ports": [{"name": "api", "containerPort": PORT}],
                "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 5, "failureThreshold": 3},
                "volumeMounts": mounts,
                "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
                "securityContext": restricted,
            }
        ],
        "volumes": [{"name": "store", "secret": {"secretName": s.storage_secret, "defaultMode": 0o440}}],
    }
    if s.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": s.image_pull_secret}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("pfsd", d, "pfsd"),
        "spec": {
            "replicas": 1,  # one daemon owns the index
            "serviceName": "pfsd",
            "selector": {"matchLabels": pfsd_labels},
            "template": {"metadata": {"labels": pfsd_labels}, "spec": pod},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
    }


def _network_policies(d: Deployment, pfsd_labels: dict) -> list[dict]:
    """pfsd takes connections on its port from worker pods and from pods labelled
    pfs.io/client=true; worker pods take none (they only connect out)."""
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta("pfsd", d, "pfsd"),
            "spec": {
                "podSelector": {"matchLabels": pfsd_labels},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {COMPONENT_LABEL: "worker", **MANAGED}}},
                            {"podSelector": {"matchLabels": {"pfs.io/client": "true"}}},
                        ],
                        "ports": [{"protocol": "TCP", "port": PORT}],
                    }
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta("pfs-workers", d, "worker"),
            "spec": {
                "podSelector": {"matchLabels": {COMPONENT_LABEL: "worker", **MANAGED}},
                "policyTypes": ["Ingress"],
            },
        },
    ]


def _device_plugin(d: Deployment) -> list[dict]:
    """smarter-device-manager, offering /dev/fuse as the resource smarter-devices/fuse."""
    labels = {**MANAGED, "app.kubernetes.io/managed-by": "pfs-deploy", COMPONENT_LABEL: "fuse-device-plugin"}
    config = "- devicematch: ^fuse$\n  nummaxdevices: 100\n"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("fuse-device-plugin", d, "fuse-device-plugin"),
            "data": {"conf.yaml": config},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("fuse-device-plugin", d, "fuse-device-plugin"),
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-node-critical",
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "device-plugin",
                                "image": DEVICE_PLUGIN_IMAGE,
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "15Mi"},
                                    "limits": {"memory": "30Mi"},
                                },
                                "volumeMounts": [
                                    {"name": "device-plugins", "mountPath": "/var/lib/kubelet/device-plugins"},
                                    {"name": "dev", "mountPath": "/dev", "readOnly": True},
                                    {"name": "config", "mountPath": "/root/config"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "device-plugins", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}},
                            {"name": "dev", "hostPath": {"path": "/dev"}},
                            {"name": "config", "configMap": {"name": "fuse-device-plugin"}},
                        ],
                    },
                },
            },
        },
    ]


def new_store_json(storage: Storage) -> bytes:
    """A new store's config: its storage URL and a random hash seed (kept secret)."""
    return msgspec.json.encode(StoreConfig(CONFIG_FORMAT, secrets.randbits(64), storage.url))


def store_url(store_json: bytes) -> str:
    try:
        return json.loads(store_json)["storage"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("the deployed storage Secret's store.json is unreadable") from None


def new_token() -> str:
    return secrets.token_urlsafe(32)
