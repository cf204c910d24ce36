"""What a deployment decides for every worker pod: the namespace, our image, how /pfs is served,
and the names of the Secrets and ServiceAccount `pfs deploy` made.

`pfs deploy` writes them into pfsd's environment (`env()`); pfsd's Kubernetes executor reads them
back (`from_env()`), as does `create-pipeline --dry-run` on an operator's machine.
"""

from __future__ import annotations

import hashlib
import os
import re

import msgspec

from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.version import VERSION

# How a worker pod serves /pfs to the user's container:
#   privileged: the worker sidecar is privileged and mounts FUSE on a shared emptyDir with
#     Bidirectional propagation; the user container sees it with HostToContainer.
#   device-plugin: the smarter-devices/fuse device plugin gives the user container /dev/fuse; the
#     launcher mounts /pfs there and passes the descriptor to the unprivileged sidecar
#     (SCM_RIGHTS), then drops CAP_SYS_ADMIN before any datum.
#   copy: no FUSE at all; the sidecar lays each datum's files out in the shared emptyDir (lazy
#     inputs as named pipes), for clusters that allow neither. The sidecar mounts the whole
#     emptyDir at /pfs; the user container mounts its COPY_DIR at /pfs, so that the sidecar's own
#     files (finished outputs, its links to the pipes) are on the same file system (renamed and
#     linked, not copied) but out of the command's sight.
FUSE_MODES = ("privileged", "device-plugin", "copy")
COPY_DIR = "datum"
FUSE_DEVICE = "smarter-devices/fuse"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ENV = "PFS_KUBE_"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    namespace: str = "default"
    image: str = f"pfsfuse/pfsfuse:{VERSION}"  # pfsd, the worker sidecar and the launcher
    image_pull_policy: str = "IfNotPresent"
    image_pull_secret: str = ""  # for our image; a spec's own go next to it
    fuse_mode: str = "privileged"
    pfsd_address: str = "pfsd:650"  # host:port of pfsd's Service, as workers reach it
    storage_secret: str = "pfs-storage"  # store.json and the object store's credentials
    auth_secret: str = "pfs-auth"  # the token workers present to pfsd (PFS_AUTH_TOKEN)
    worker_service_account: str = "pfs-worker"
    cache_size: str = "1Gi"  # the worker's chunk cache (an emptyDir of this size limit)

    def __post_init__(self):
        if self.fuse_mode not in FUSE_MODES:
            raise InvalidArgument(f"fuse mode {self.fuse_mode!r} is not one of {', '.join(FUSE_MODES)}")
        if not _DNS_LABEL.fullmatch(self.namespace) or len(self.namespace) > 63:
            raise InvalidArgument(f"namespace {self.namespace!r} is not a DNS label (lowercase letters, digits, '-')")

    def env(self) -> dict[str, str]:
        """The settings as environment variables, for pfsd's container."""
        return {_ENV + k.upper(): str(v) for k, v in msgspec.structs.asdict(self).items()}

    @classmethod
    def from_env(cls, environ=None) -> Settings:
        environ = os.environ if environ is None else environ
        given = {f: environ[_ENV + f.upper()] for f in cls.__struct_fields__ if _ENV + f.upper() in environ}
        return cls(**given)


def dns_name(name: str) -> str:
    """A pipeline name as part of an object name: pipeline names may hold '_' and capitals, which
    object names may not, so such a name gets a short hash of itself to stay unique."""
    safe = name.lower().replace("_", "-").strip("-")
    if safe == name:
        return name
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:6]}".strip("-")
