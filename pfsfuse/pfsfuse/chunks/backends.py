"""Opening an object store by its URL's scheme.

The table names each backend as "module:Class" and imports it only when its scheme is asked for,
so a process loads only the SDK of the store it uses; the backends never import this module.
A backend class is built with `Class.from_url(url)`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .objects import ObjectStore

BACKENDS = {
    "file": "pfsfuse.chunks.local:LocalStore",  # a local directory, file:///absolute/path
    "s3": "pfsfuse.chunks.s3:S3Store",
    "gs": "pfsfuse.chunks.gcs:GCSStore",
    "az": "pfsfuse.chunks.azure:AzureStore",
}


def open_store(url: str) -> ObjectStore:
    """The object store at `url`: "file:///abs/dir" (a local directory), "s3://bucket/prefix",
    "gs://bucket/prefix" or "az://container/prefix"."""
    target = BACKENDS.get(urlsplit(url).scheme)
    if target is None:
        schemes = ", ".join(f"{s}://" for s in BACKENDS)
        raise ValueError(f"unsupported storage URL {url!r}: supported schemes are {schemes}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name).from_url(url)


# The object stores' credentials, as files named like their environment variables in a store
# directory (PFS_STORE_DIR: the storage Secret `pfs deploy` makes, mounted as a volume), and a
# Google service account key as google.json.
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
)
GOOGLE_KEY = "google.json"


def credentials_in(directory: str | os.PathLike) -> dict[str, str]:
    """The credentials a store directory holds, as environment variables."""
    found = {}
    for name in CREDENTIAL_ENV:
        try:
            found[name] = (Path(directory) / name).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    if os.access(Path(directory) / GOOGLE_KEY, os.R_OK):
        found["GOOGLE_APPLICATION_CREDENTIALS"] = str(Path(directory) / GOOGLE_KEY)
    return found
