import os

import pytest

from helpers import BUCKET
from pfsfuse.chunks import LocalStore, open_store

BACKENDS = ["local", "s3", "gcs", "azure"]


def store_url(backend: str, request, endpoint: str | None = None) -> str:
    """A URL of an empty store of `backend` (a fresh prefix in the shared bucket), starting the
    emulator it needs. `endpoint` (for S3) points the client elsewhere, e.g. at a proxy."""
    prefix = f"t-{os.urandom(6).hex()}/objects"
    if backend == "s3":
        endpoint = endpoint or request.getfixturevalue("moto").url
        return f"s3://{BUCKET}/{prefix}?endpoint={endpoint}"
    if backend == "gcs":
        request.getfixturevalue("gcs")
        return f"gs://{BUCKET}/{prefix}"
    if backend == "azure":
        request.getfixturevalue("azurite")
        return f"az://{BUCKET}/{prefix}"
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    """An empty ObjectStore of each backend; the contract tests run against all of them."""
    if request.param == "local":
        s = LocalStore(tmp_path / "objects")
    else:
        s = open_store(store_url(request.param, request))
    try:
        yield s
    finally:
        s.close()
