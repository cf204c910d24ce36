"""Shared fixtures: temporary PFS_HOMEs, real daemons in subprocesses, and the object-store
emulators (each with the bucket BUCKET)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import BUCKET, Daemon, Emulator, azurite_connection_string

# The suite's pipelines run their commands as root: they call this checkout's Python, which may
# live where other users cannot reach it (a pyenv under /root). tests/scheduler/test_sandbox.py
# clears these to check the unprivileged default.
os.environ.setdefault("PFS_PIPELINE_USER", "root")
os.environ.setdefault("PFS_ALLOW_ROOT_COMMANDS", "1")


@pytest.fixture
def tmp_home() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="pfs-", dir="/tmp"))
    try:
        yield path
    finally:
        if not os.environ.get("PFS_KEEP_TMP"):  # set it to read a failed test's daemon logs
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(tmp_home: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_home / "home")
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()


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
