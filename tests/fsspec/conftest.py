"""A `pfs://` file system on a real daemon, with one repo ("data") to write into."""

from __future__ import annotations

import pytest

from pfsfuse.fsspec_pfs import PfsFileSystem


@pytest.fixture
def address(daemon) -> str:
    return f"unix:{daemon.home}/pfs.sock"


@pytest.fixture
def pfs(address, monkeypatch):
    # Through the environment, as pandas and DuckDB make it (fsspec.filesystem("pfs")).
    monkeypatch.setenv("PFS_ADDRESS", address)
    fs = PfsFileSystem(skip_instance_cache=True)
    fs.client.create_repo("data")
    try:
        yield fs
    finally:
        fs.client.close()
