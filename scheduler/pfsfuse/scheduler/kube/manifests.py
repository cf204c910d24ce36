"""What a pipeline becomes on Kubernetes: a ConfigMap holding its spec, and bare worker pods
(`restartPolicy: Never`) owned by that ConfigMap, so that deleting it deletes them.

A worker pod:
    init container `pfs-launcher`: copies our static launcher into the emptyDir /pfs-bin;
    native sidecar `pfs-worker` (an init container with restartPolicy Always): the Python worker;
        it serves /pfs (see `settings.FUSE_MODES`), holds store.json and the object store's
        credentials (a Secret mounted into it alone) and the token it shows pfsd;
    container `user`: the spec's transform.image running /pfs-bin/launcher, which runs each
        datum's command when the worker asks over the unix socket in /run/pfs. Nothing of ours
        needs to be installed in that image, and it never sees the store's credentials.
"""

from __future__ import annotations

import json
import math
import re

import msgspec

from pfsfuse.chunks import backends
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.scheduler.kube.patch import apply_pod_patch, apply_pod_spec
from pfsfuse.scheduler.kube.settings import COPY_DIR, FUSE_DEVICE, Settings, dns_name
from pfsfuse.scheduler.spec import PipelineSpec, Resources, duration

PIPELINE_LABEL = "pfs.io/pipeline"
VERSION_LABEL = "pfs.io/version"
WORKER_LABEL = "pfs.io/worker"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED = {"app.kubernetes.io/part-of": "pfsfuse", "app.kubernetes.io/managed-by": "pfsd"}

SIDECAR, LAUNCHER, USER = "pfs-worker", "pfs-launcher", "user"
LAUNCHER_IMAGE_PATH = "/usr/local/lib/pfs/launcher"  # where our image keeps the static launcher
SOCKET_DIR = "/run/pfs"  # the worker's socket (worker.sock) and its ready mark
READY_MARK = f"{SOCKET_DIR}/ready"
STORE_DIR = "/etc/pfs/store"
SIDECAR_UID = 65532  # our image's containers run as this user unless they must be root
OWNER_UID_PLACEHOLDER = "set-when-the-configmap-is-created"

# A stopping pod's grace period (terminationGracePeriodSeconds): without a datum_timeout, datums
# of up to DEFAULT_GRACE seconds finish; with one, it and GRACE_MARGIN, at most MAX_GRACE.
DEFAULT_GRACE, GRACE_MARGIN, MAX_GRACE = 300, 30, 3600

# The object store's credentials, as `pfs deploy` names them in the storage Secret (the names a
# store directory holds them under). The sidecar gets the ones there are (optional references);
# GOOGLE_APPLICATION_CREDENTIALS names the key file, which is in the same Secret, mounted at
# STORE_DIR.
CREDENTIAL_ENV = (*backends.CREDENTIAL_ENV, "GOOGLE_APPLICATION_CREDENTIALS")
AUTH_TOKEN_ENV, AUTH_TOKEN_KEY = "PFS_AUTH_TOKEN", "token"

# Kubernetes quantities ("500m", "1.5", "64Mi", "2G"); Pachyderm's "1G" etc. are among them.
_QUANTITY = re.compile(r"[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|[numkMGTPE]|[KMGTPE]i)?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def grace_seconds(spec: PipelineSpec) -> int:
    """How long Kubernetes lets a stopping worker pod finish its datum (and save its output)
    before killing it: the spec's datum_timeout and a margin, bounded."""
    if not spec.datum_timeout:
        return DEFAULT_GRACE
    return min(MAX_GRACE, math.ceil(duration(spec.datum_timeout)) + GRACE_MARGIN)


def config_map_name(pipeline: str) -> str:
    return f"pfs-pipeline-{dns_name(pipeline)}"


def pod_name(pipeline: str, version: int, worker_id: str) -> str:
    return f"pfs-{dns_name(pipeline)}-v{version}-{worker_id}"


def labels(pipeline: str, version: int | None = None, worker_id: str | None = None) -> dict[str, str]:
    out = {**MANAGED, PIPELINE_LABEL: pipeline}
    if version is not None:
        out[VERSION_LABEL] = str(version)
    if worker_id is not None:
        out[WORKER_LABEL] = worker_id
    return out


def config_map(spec: PipelineSpec, version: int, settings: Settings) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(spec.name),
            "namespace": settings.namespace,
            "labels": {**labels(spec.name, version), COMPONENT_LABEL: "pipeline"},
        },
        "data": {"spec.json": msgspec.json.encode(spec).decode()},
    }


def worker_pod(
    spec: PipelineSpec, version: int, worker_id: str, settings: Settings, owner_uid: str = OWNER_UID_PLACEHOLDER
) -> dict:
    """The pod of one worker; raises InvalidArgument for a spec that cannot make a valid pod."""
    tf = spec.transform
    if not tf.image:
        raise InvalidArgument("pipeline spec: `transform.image` must name the image the command runs in")
    name = pod_name(spec.name, version, worker_id)
    mode = settings.fuse_mode
    volumes = [
        {"name": "pfs", "emptyDir": {}},
        {"name": "pfs-bin", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "pfs-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "pfs-store", "secret": {"secretName": settings.storage_secret, "defaultMode": 0o440}},
        {"name": "pfs-cache", "emptyDir": {"sizeLimit": settings.cache_size}},
        {"name": "pfs-scratch", "emptyDir": {}},
    ]
    user_mounts = [
        {"name": "pfs-bin", "mountPath": "/pfs-bin", "readOnly": True},
        {"name": "pfs-run", "mountPath": SOCKET_DIR},
        {
            "name": "pfs",
            "mountPath": "/pfs",
            **({"mountPropagation": "HostToContainer"} if mode == "privileged" else {}),
            **({"subPath": COPY_DIR} if mode == "copy" else {}),
        },
    ]
    user_env: list[dict] = [{"name": k, "value": v} for k, v in sorted(tf.env.items())]
    for n, s in enumerate(tf.secrets):
        where = f"transform.secrets[{n}]"
        if not s.mount_path and not s.env_var:
            raise InvalidArgument(f"pipeline spec: `{where}` must set mount_path or env_var")
        if s.mount_path:
            if not s.mount_path.startswith("/") or s.mount_path.rstrip("/") in ("", "/pfs", "/pfs-bin", SOCKET_DIR):
                raise InvalidArgument(
                    f"pipeline spec: `{where}.mount_path` {s.mount_path!r} must be an absolute path "
                    "other than /, /pfs, /pfs-bin and /run/pfs"
                )
            volumes.append({"name": f"secret-{n}", "secret": {"secretName": s.name}})
            user_mounts.append({"name": f"secret-{n}", "mountPath": s.mount_path, "readOnly": True})
        if s.env_var:
            if not _ENV_NAME.fullmatch(s.env_var) or not s.key:
                raise InvalidArgument(f"pipeline spec: `{where}` needs a valid env_var and the key to read")
            user_env.append({"name": s.env_var, "valueFrom": {"secretKeyRef": {"name": s.name, "key": s.key}}})
    for k in tf.env:
        if not _ENV_NAME.fullmatch(k):
            raise InvalidArgument(f"pipeline spec: `transform.env` has {k!r}, which is not a variable name")
    user_env.append({"name": "PFS_LAUNCHER_SOCKET", "value": f"{SOCKET_DIR}/worker.sock"})
    if mode == "device-plugin":  # the launcher mounts /dev/fuse there and passes it to the sidecar
        user_env.append({"name": "PFS_LAUNCHER_MOUNT", "value": "/pfs"})

    user = {
        "name": USER,
        "image": tf.image,
        "command": ["/pfs-bin/launcher"],
        "env": user_env,
        "volumeMounts": user_mounts,
        "resources": _resources(spec, mode),
        "securityContext": (
            # The launcher mounts /dev/fuse at /pfs, then drops CAP_SYS_ADMIN before any datum.
            {"capabilities": {"add": ["SYS_ADMIN"]}} if mode == "device-plugin" else {"allowPrivilegeEscalation": False}
        ),
    }
    if tf.working_dir:
        user["workingDir"] = tf.working_dir

    pod_spec = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.worker_service_account,
        "automountServiceAccountToken": False,  # no worker talks to the Kubernetes API
        "enableServiceLinks": False,  # the user's environment is the spec's, not every Service's
        "terminationGracePeriodSeconds": grace_seconds(spec),
        "securityContext": {"fsGroup": SIDECAR_UID},  # the unprivileged sidecar reads the Secret's files
        "initContainers": [_launcher_copy(settings), _sidecar(spec, name, settings)],
        "containers": [user],
        "volumes": volumes,
    }
    pull = [settings.image_pull_secret] if settings.image_pull_secret else []
    pull += [s for s in tf.image_pull_secrets if s not in pull]
    if pull:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull]
    sched = spec.scheduling_spec
    if sched is not None and sched.node_selector:
        pod_spec["nodeSelector"] = dict(sched.node_selector)
    if sched is not None and sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name
    if spec.pod_spec:
        pod_spec = apply_pod_spec(pod_spec, spec.pod_spec)
    if spec.pod_patch:
        pod_spec = apply_pod_patch(pod_spec, spec.pod_patch)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {**labels(spec.name, version, worker_id), COMPONENT_LABEL: "worker"},
            "annotations": {"pfs.io/fuse-mode": mode},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": config_map_name(spec.name),
                    "uid": owner_uid,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }
    wrong = problems(pod, settings)
    if wrong:
        raise InvalidArgument(f"the worker pod of pipeline {spec.name} would be unsafe or invalid: {wrong[0]}")
    return pod


def _launcher_copy(settings: Settings) -> dict:
    return {
        "name": LAUNCHER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["cp", LAUNCHER_IMAGE_PATH, "/pfs-bin/launcher"],
        "volumeMounts": [{"name": "pfs-bin", "mountPath": "/pfs-bin"}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": _restricted(),
    }


def _sidecar(spec: PipelineSpec, pod: str, settings: Settings) -> dict:
    mode = settings.fuse_mode
    env = [
        {"name": "PFS_ADDRESS", "value": settings.pfsd_address},
        {"name": AUTH_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": settings.auth_secret, "key": AUTH_TOKEN_KEY}}},
        {"name": "PFS_HOME", "value": "/var/lib/pfs"},
        {"name": "PFS_CACHE_DIR", "value": "/var/cache/pfs"},
        {"name": "PFS_FUSE_MODE", "value": mode},
        {"name": "PFS_LAUNCHER_SOCKET", "value": f"{SOCKET_DIR}/worker.sock"},  # runs datums through the launcher
        {"name": "PFS_STORE_DIR", "value": STORE_DIR},  # store.json: chunks straight from the object store
        *(
            {"name": k, "valueFrom": {"secretKeyRef": {"name": settings.storage_secret, "key": k, "optional": True}}}
            for k in CREDENTIAL_ENV
        ),
    ]
    mounts = [
        {"name": "pfs", "mountPath": "/pfs", **({"mountPropagation": "Bidirectional"} if mode == "privileged" else {})},
        {"name": "pfs-run", "mountPath": SOCKET_DIR},
        {"name": "pfs-store", "mountPath": STORE_DIR, "readOnly": True},
        {"name": "pfs-cache", "mountPath": "/var/cache/pfs"},
        {"name": "pfs-scratch", "mountPath": "/var/lib/pfs"},
    ]
    sidecar = {
        "name": SIDECAR,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "restartPolicy": "Always",  # a native sidecar: it runs beside the user container
        "command": ["python", "-m", "pfsfuse.scheduler.worker", spec.name, pod],
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        # Privileged mounts FUSE as root (our image's user is SIDECAR_UID otherwise).
        "securityContext": {"privileged": True, "runAsUser": 0} if mode == "privileged" else _restricted(),
    }
    if mode != "device-plugin":  # there /pfs is mounted by the launcher, after the sidecar starts
        sidecar["startupProbe"] = {
            "exec": {"command": ["test", "-e", READY_MARK]},
            "periodSeconds": 1,
            "failureThreshold": 300,
        }
    return sidecar


def _restricted() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": SIDECAR_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(spec: PipelineSpec, mode: str) -> dict:
    out: dict[str, dict[str, str]] = {}
    for field, kind in (("resource_requests", "requests"), ("resource_limits", "limits")):
        r = getattr(spec, field)
        if r is not None:
            out[kind] = _quantities(r, field)
    gpus = out.get("requests", {}).pop("nvidia.com/gpu", None)
    if gpus is not None:  # extended resources are asked for as limits (requests must equal them)
        out.setdefault("limits", {}).setdefault("nvidia.com/gpu", gpus)
    if mode == "device-plugin":
        out.setdefault("limits", {})[FUSE_DEVICE] = "1"
    return {k: v for k, v in out.items() if v}


def _quantities(r: Resources, field: str) -> dict[str, str]:
    out = {}
    if r.cpu < 0 or r.gpu < 0:
        raise InvalidArgument(f"pipeline spec: `{field}` must not be negative")
    if r.cpu:
        out["cpu"] = f"{round(r.cpu * 1000)}m"
    for name, key in (("memory", "memory"), ("disk", "ephemeral-storage")):
        value = getattr(r, name)
        if value:
            if not _QUANTITY.fullmatch(value):
                raise InvalidArgument(
                    f"pipeline spec: `{field}.{name}` {value!r} is not a quantity such as 512M or 2Gi"
                )
            out[key] = value
    if r.gpu:
        out["nvidia.com/gpu"] = str(r.gpu)
    return out


def problems(pod: dict, settings: Settings) -> list[str]:
    """What the API schema does not catch but we require of a worker pod (a spec's pod_spec or
    pod_patch may have changed it): each mount names a volume, Bidirectional propagation only in
    a privileged container, the store's credentials and the token in the sidecar alone."""
    out = []
    spec = pod.get("spec") or {}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if spec.get("restartPolicy") != "Never":
        out.append("restartPolicy must stay Never: the executor replaces dead workers itself")
    names = [c.get("name") for c in containers]
    for needed in (LAUNCHER, SIDECAR, USER):
        if needed not in names:
            out.append(f"the {needed} container is missing")
    secret_volumes = {
        n
        for n, v in volumes.items()
        if (v.get("secret") or {}).get("secretName") in (settings.storage_secret, settings.auth_secret)
    }
    for c in containers:
        cname = c.get("name")
        privileged = bool((c.get("securityContext") or {}).get("privileged"))
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                out.append(f"container {cname} mounts volume {m.get('name')!r}, which the pod does not have")
            if m.get("mountPropagation") == "Bidirectional" and not privileged:
                out.append(
                    f"container {cname} mounts {m.get('mountPath')} with Bidirectional propagation "
                    "but is not privileged"
                )
            if m.get("name") in secret_volumes and cname != SIDECAR:
                out.append(f"container {cname} mounts the store's Secret: only the {SIDECAR} sidecar may")
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if ref in (settings.storage_secret, settings.auth_secret) and cname != SIDECAR:
                out.append(
                    f"container {cname} reads Secret {ref} into ${e.get('name')}: only the {SIDECAR} sidecar may"
                )
        for source in c.get("envFrom") or []:
            ref = (source.get("secretRef") or {}).get("name")
            if ref in (settings.storage_secret, settings.auth_secret) and cname != SIDECAR:
                out.append(f"container {cname} takes its environment from Secret {ref}: only the {SIDECAR} sidecar may")
    sidecar = next((c for c in spec.get("initContainers") or [] if c.get("name") == SIDECAR), None)
    if sidecar is not None and sidecar.get("restartPolicy") != "Always":
        out.append(f"the {SIDECAR} init container must keep restartPolicy Always (a native sidecar)")
    return out


def dry_run(spec: PipelineSpec, settings: Settings, version: int = 1) -> list[dict]:
    """The ConfigMap and a worker pod the executor would create for `spec` (the pod's owner uid
    is only known once the ConfigMap exists)."""
    return [config_map(spec, version, settings), worker_pod(spec, version, "0", settings)]


def dump(objects: list[dict], fmt: str) -> str:
    """Objects as `kubectl apply -f` takes them: a v1 List in JSON, or YAML documents."""
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    import yaml

    return yaml.safe_dump_all(objects, sort_keys=False)
