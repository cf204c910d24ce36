"""TCP clients given PFS_STORE_DIR read chunks from the object store themselves (moto's S3 here):
the daemon serves them read plans only, which its traffic counter shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from helpers import BUCKET, PFS, Daemon, FaultProxy, free_port


class Deployed:
    """A daemon on TCP over a store in moto's S3, and the environments of remote clients."""

    def __init__(self, tmp: Path, moto):
        self.tmp = tmp
        self.moto = moto
        self.prefix = uuid.uuid4().hex
        self.port = free_port()
        storage = f"s3://{BUCKET}/{self.prefix}?endpoint={moto.url}&region=us-east-1"
        self.daemon = Daemon(tmp / "home", ["--listen", f"127.0.0.1:{self.port}", "--insecure", "--storage", storage])
        self.store_dir = tmp / "store"
        # Clients have no AWS credentials in their environment: the store directory brings them.
        base = {k: v for k, v in self.daemon.env.items() if not k.startswith("AWS_")}
        self.remote = {**base, "PFS_ADDRESS": f"127.0.0.1:{self.port}", "PFS_HOME": str(tmp / "client")}
        self.direct = {**self.remote, "PFS_STORE_DIR": str(self.store_dir), "PFS_CACHE_DIR": str(tmp / "cache")}

    def start(self) -> Deployed:
        self.daemon.start()
        # What `pfs deploy`'s storage Secret holds, as mounted into a worker pod.
        self.store_dir.mkdir()
        shutil.copy(self.daemon.home / "store.json", self.store_dir / "store.json")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            (self.store_dir / name).write_text(os.environ[name])
        return self

    def pfs(self, env: dict, *args: str, input: bytes | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([PFS, *args], env=env, input=input, capture_output=True, timeout=120)
        if ok and r.returncode != 0:
            raise AssertionError(f"pfs {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
        return r

    def traffic(self):
        client = self.daemon.client()
        try:
            return client.traffic()
        finally:
            client.close()

    def stop(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.daemon.kill()


@pytest.fixture
def deployed(tmp_home, moto):
    d = Deployed(tmp_home, moto)
    try:
        yield d.start()
    finally:
        d.stop()


def test_a_client_with_the_store_dir_reads_chunks_itself(deployed):
    data = os.urandom(5 << 20)
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.remote, "put-file", "r", "master", "big", input=data)
    before = deployed.traffic()
    assert before.received == len(data)  # streamed through the daemon (direct writes: not built)

    assert deployed.pfs(deployed.direct, "get-file", "r", "master", "big").stdout == data
    assert deployed.pfs(deployed.direct, "get-file", "r", "master", "big").stdout == data  # from the cache
    assert deployed.traffic().served == before.served  # read plans only

    from pfsfuse import Client

    with Client(f"127.0.0.1:{deployed.port}", store_dir=deployed.store_dir) as sdk:
        assert b"".join(sdk.get_file(("r", "master"), "big")) == data
    assert deployed.traffic().served == before.served

    # Without the store directory, the same client streams the bytes through the daemon.
    assert deployed.pfs(deployed.remote, "get-file", "r", "master", "big").stdout == data
    assert deployed.traffic().served == before.served + len(data)
    shown = deployed.pfs(deployed.remote, "inspect-cluster").stdout.decode()
    assert "Data served" in shown and "5MiB" in shown


def test_a_store_dir_without_the_config_falls_back_to_the_daemon(deployed):
    data = os.urandom(1 << 20)
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.remote, "put-file", "r", "master", "f", input=data)
    before = deployed.traffic().served
    (deployed.store_dir / "store.json").unlink()
    assert deployed.pfs(deployed.direct, "get-file", "r", "master", "f").stdout == data
    assert deployed.traffic().served == before + len(data)


def test_refused_credentials_fall_back_to_the_daemon(deployed):
    data = os.urandom(1 << 20)
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.remote, "put-file", "r", "master", "f", input=data)
    before = deployed.traffic().served
    # A store directory naming an endpoint nobody listens on: the object store is unreachable.
    config = json.loads((deployed.store_dir / "store.json").read_text())
    config["storage"] = config["storage"].replace(deployed.moto.url, f"http://127.0.0.1:{free_port()}")
    (deployed.store_dir / "store.json").write_text(json.dumps(config))
    r = deployed.pfs(deployed.direct, "get-file", "r", "master", "f")
    assert r.stdout == data
    assert deployed.traffic().served == before + len(data)


def test_a_chunk_damaged_in_transit_is_fetched_again_and_a_damaged_pack_is_an_error(deployed):
    data = os.urandom(3 << 20)
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.remote, "put-file", "r", "master", "f", input=data)
    before = deployed.traffic().served
    config = json.loads((deployed.store_dir / "store.json").read_text())
    with FaultProxy(f"127.0.0.1:{deployed.moto.port}", {}) as proxy:
        config["storage"] = config["storage"].replace(deployed.moto.url, proxy.url)
        (deployed.store_dir / "store.json").write_text(json.dumps(config))
        proxy.garble = 1
        env = {**deployed.direct, "PFS_CACHE_SIZE": "0"}
        assert deployed.pfs(env, "get-file", "r", "master", "f").stdout == data
        assert proxy.garble == 0  # one answer was damaged, and its chunk fetched again

        # Damaged at rest: every fetch is wrong. One clear line, no traceback, no bytes.
        proxy.garble = 1000
        r = deployed.pfs(env, "get-file", "r", "master", "f", ok=False)
        assert r.returncode != 0 and r.stdout == b""
        assert b"Traceback" not in r.stderr and b"does not match" in r.stderr
        assert len(r.stderr.decode().strip().splitlines()) == 1
    assert deployed.traffic().served == before
