"""Fault injection: each backend behind a proxy that fails, resets, hangs and truncates a share of
the requests. Writing packs and reading them back must still give exactly the bytes written: the
retries absorb the faults, and what they cannot absorb is an error, never wrong data."""

import io
import os
import time

import pytest

from conftest import store_url
from helpers import FaultProxy, azurite_connection_string, write_chunks
from pfsfuse.chunks import (
    AzureStore,
    ChunkStore,
    GCSStore,
    S3Store,
    StorageError,
    open_store,
    read_pack_index,
)

SEED = 0xFA17
RATES = {"error": 0.1, "reset": 0.1, "hang": 0.05, "truncate": 0.1, "stall": 0.05}
EMULATOR = {"s3": "moto", "gcs": "gcs", "azure": "azurite"}
CLOUD = {"s3": S3Store, "gcs": GCSStore, "azure": AzureStore}


@pytest.fixture
def impatient(monkeypatch):
    """Clients that give up on a silent server after half a second, and retry soon."""
    for cls in CLOUD.values():
        monkeypatch.setattr(cls, "read_timeout", 0.5)
        monkeypatch.setattr(cls, "retry_delay", 0.01)
        monkeypatch.setattr(cls, "retry_attempts", 12)


def proxied(backend: str, request, monkeypatch, proxy: FaultProxy) -> str:
    """The URL of a fresh store of `backend` whose client goes through `proxy`."""
    request.getfixturevalue(EMULATOR[backend])  # first: it sets the environment for itself
    if backend == "gcs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    if backend == "azure":
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(proxy.port))
    return store_url(backend, request, endpoint=proxy.url)


def upstream(backend: str, request) -> str:
    return f"127.0.0.1:{request.getfixturevalue(EMULATOR[backend]).port}"


@pytest.mark.parametrize("backend", EMULATOR)
def test_packs_survive_faults(backend, request, monkeypatch, impatient):
    with FaultProxy(upstream(backend, request), RATES, hang=1.0, seed=1) as proxy:
        chunks = ChunkStore(open_store(proxied(backend, request, monkeypatch, proxy)), SEED)
        try:
            data = os.urandom(4 << 20) + bytes(range(256)) * (8 << 10)  # random, then compressible
            located = write_chunks(chunks, data, target=256 << 10)
            packs = {loc.pack for _, _, loc in located}
            assert b"".join(chunks.reader.read_range(located)) == data
            assert b"".join(chunks.reader.read(*c) for c in located) == data
            indexed = {h: loc for pack in packs for h, loc, _ in read_pack_index(chunks.objects, pack)}
            assert all(indexed[h] == loc for h, _, loc in located)
        finally:
            chunks.reader.close()
            chunks.objects.close()
    assert sum(proxy.faults.values()) >= 4, proxy.faults


@pytest.mark.parametrize("backend", EMULATOR)
@pytest.mark.parametrize("fault", ["hang", "stall"])
def test_hung_requests_time_out(backend, fault, request, monkeypatch, impatient):
    # A server that stops answering is a timeout (retried), not a reader stuck for ever.
    url = store_url(backend, request)
    with open_store(url) as direct:
        direct.put("k", os.urandom(1 << 20))
    monkeypatch.setattr(CLOUD[backend], "retry_attempts", 1)
    with FaultProxy(upstream(backend, request), {fault: 1.0}, hang=60) as proxy:
        proxied(backend, request, monkeypatch, proxy)  # points GCS and Azure at the proxy
        if backend == "s3":
            url = url.replace(request.getfixturevalue("moto").url, proxy.url)
        with open_store(url) as store:
            start = time.monotonic()
            with pytest.raises(StorageError, match="get failed"):
                store.get("k")
            # Azure's downloader retries a body cut short by itself, a second apart
            assert time.monotonic() - start < (6 if backend == "azure" and fault == "stall" else 3)


def test_store_round_trip_through_faults(request, monkeypatch, impatient, tmp_home):
    """put-file and get-file of the file engine, in process, over S3 through the faulty proxy."""
    from pfsfuse.api.types import Put
    from pfsfuse.home import Home
    from pfsfuse.store import Store

    with FaultProxy(upstream("s3", request), RATES, hang=1.0, seed=2) as proxy:
        store = Store(Home(tmp_home / "home"), storage=proxied("s3", request, monkeypatch, proxy))
        try:
            big = os.urandom(20 << 20)
            small = b"tiny file\n"
            store.create_repo("data")
            store.write_files(
                "data",
                "master",
                [Put("big.bin", stream=io.BytesIO(big)), Put("small.txt", stream=io.BytesIO(small))],
            )
            assert b"".join(store.get_file("data", "master", "big.bin")) == big
            assert b"".join(store.get_file("data", "master", "small.txt")) == small
            part = b"".join(store.get_file("data", "master", "big.bin", 3 << 20, 5 << 20))
            assert part == big[3 << 20 : 8 << 20]
        finally:
            store.close()
    assert sum(proxy.faults.values()) >= 3, proxy.faults
