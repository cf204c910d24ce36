import os
import tempfile
from pathlib import Path

import pytest
from helpers import Emulator, azurite_connection_string

from pfsfuse.chunks import LocalStore, open_store

BUCKET = "pfs-test"
BACKENDS = ["local", "s3", "gcs", "azure"]


@pytest.fixture(scope="session")
def emulator_dir():
    with tempfile.TemporaryDirectory(prefix="pfs-emulators-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def moto(emulator_dir):
    """moto's S3 server with the bucket BUCKET, and fake AWS credentials in the environment."""
    import boto3

    emulator = Emulator.moto(emulator_dir).start()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.delenv("AWS_PROFILE", raising=False)
            client = boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            client.close()
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def gcs(emulator_dir):
    """gcp-storage-emulator with the bucket BUCKET, and STORAGE_EMULATOR_HOST naming it."""
    emulator = Emulator.gcs(emulator_dir, BUCKET).start()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", emulator.url)
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def azurite(emulator_dir):
    """Azurite's blob service with the container BUCKET, and its connection string in the
    environment."""
    from azure.storage.blob import BlobServiceClient

    emulator = Emulator.azurite(emulator_dir).start()
    try:
        with pytest.MonkeyPatch.context() as env:
            connection = azurite_connection_string(emulator.port)
            env.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
            with BlobServiceClient.from_connection_string(connection) as service:
                service.create_container(BUCKET)
            yield emulator
    finally:
        emulator.stop()


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
