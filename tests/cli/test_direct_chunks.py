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

from helpers import BUCKET, PFS, Daemon, FaultProxy, free_port, rows


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


def test_a_client_with_the_store_dir_reads_chunks_itself(deployed, monkeypatch):
    data = os.urandom(5 << 20)
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.remote, "put-file", "r", "master", "big", input=data)
    before = deployed.traffic()
    assert before.received == len(data)  # streamed through the daemon (direct writes: not built)

    assert deployed.pfs(deployed.direct, "get-file", "r", "master", "big").stdout == data
    assert deployed.pfs(deployed.direct, "get-file", "r", "master", "big").stdout == data  # from the cache
    assert deployed.traffic().served == before.served  # read plans only

    from pfsfuse import Client

    monkeypatch.setenv("PFS_CACHE_DIR", str(deployed.tmp / "cache"))  # the SDK's, in this process
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


def test_a_client_with_the_store_dir_writes_chunks_itself(deployed, tmp_home, monkeypatch):
    big = os.urandom(5 << 20)
    tree = tmp_home / "tree"
    (tree / "sub").mkdir(parents=True)
    small = {"a": b"alpha\n", "sub/b": os.urandom(300 << 10), "empty": b""}
    for name, data in small.items():
        (tree / name).write_bytes(data)
    deployed.pfs(deployed.remote, "create-repo", "r")
    before = deployed.traffic()
    deployed.pfs(deployed.direct, "put-file", "r", "master", "big", input=big)
    deployed.pfs(deployed.direct, "put-file", "r", "master", "big", "--append", input=b"tail")
    deployed.pfs(deployed.direct, "put-file", "r", "master", "t", "-r", "-f", str(tree))
    deployed.pfs(deployed.direct, "put-file", "r", "master", "again", input=big)  # chunks the store has
    from pfsfuse import Client

    monkeypatch.setenv("PFS_CACHE_DIR", str(deployed.tmp / "cache"))  # the SDK's, in this process
    with Client(f"127.0.0.1:{deployed.port}", store_dir=deployed.store_dir) as sdk:
        sdk.put_file_bytes(("r", "master"), "sdk", iter([b"from ", b"the SDK"]))
    after = deployed.traffic()
    assert (after.received, after.served) == (before.received, before.served)  # metadata only

    # Read back through the daemon (no store dir): what the direct writer stored is the data.
    get = lambda path: deployed.pfs(deployed.remote, "get-file", "r", "master", path).stdout  # noqa: E731
    assert get("big") == big + b"tail"
    assert get("again") == big
    assert get("sdk") == b"from the SDK"
    for name, data in small.items():
        assert get(f"t/{name}") == data
    assert deployed.daemon.pfs("fsck").returncode == 0


def test_a_failed_direct_write_commits_nothing(deployed):
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.remote, "put-file", "r", "master", "kept", input=b"kept")
    commits = lambda: [row[1] for row in rows(deployed.pfs(deployed.remote, "list-commit", "r").stdout.decode())]  # noqa: E731
    before = commits()
    config = json.loads((deployed.store_dir / "store.json").read_text())
    config["storage"] = config["storage"].replace(f"/{BUCKET}/", "/no-such-bucket/")
    (deployed.store_dir / "store.json").write_text(json.dumps(config))
    r = deployed.pfs(deployed.direct, "put-file", "r", "master", "lost", input=os.urandom(1 << 20), ok=False)
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert b"cannot store chunks" in r.stderr and len(r.stderr.decode().strip().splitlines()) == 1
    assert commits() == before
    assert deployed.pfs(deployed.remote, "inspect-file", "r", "master", "lost", ok=False).returncode != 0


def test_chunk_locations_without_the_stores_seed_are_refused(deployed):
    from pfsfuse.api.remote import RemoteClient
    from pfsfuse.api.types import Put
    from pfsfuse.chunks import ChunkLoc
    from pfsfuse.metadata.errors import NotFound, PermissionDenied
    from pfsfuse.metadata.records import ChunkRef

    deployed.pfs(deployed.remote, "create-repo", "r")
    forged = [(ChunkRef(b"\1" * 16, 3), ChunkLoc(b"\2" * 16, 0, 3, 0))]
    client = RemoteClient(f"127.0.0.1:{deployed.port}")
    try:
        with pytest.raises(PermissionDenied, match="holding the store's config"):
            client.write_files("r", "master", [Put("x", chunks=forged, proof=b"\0" * 32)])
        with pytest.raises(NotFound):
            client.inspect_file("r", "master", "x")
    finally:
        client.close()


def test_a_collection_between_a_direct_upload_and_its_record_keeps_the_packs(deployed, monkeypatch):
    from pfsfuse.api.remote import RemoteClient
    from pfsfuse.api.types import Put, located_bytes
    from pfsfuse.home import Home
    from pfsfuse.metadata.records import ChunkRef

    deployed.pfs(deployed.remote, "create-repo", "r")
    data = os.urandom(3 << 20)
    monkeypatch.setenv("PFS_CACHE_DIR", str(deployed.tmp / "cache"))
    client = RemoteClient(f"127.0.0.1:{deployed.port}", Home(deployed.store_dir))
    try:
        store = client.chunk_store
        assert store is not None
        refs, where = [], {}
        with store.writer() as writer:  # what a direct write does before it sends the locations
            for piece in store.chunker.cut_buf(data):
                refs.append(ChunkRef(store.hash(piece), len(piece)))
                where.update(writer.add(refs[-1].hash, piece))
            where.update(writer.flush())
        gc = client.garbage_collect()  # the packs are stored, not yet indexed
        assert gc.orphan_packs == 0 and gc.orphans_waiting >= 1
        located = [(r, where[r.hash]) for r in refs]
        client.write_files("r", "master", [Put("f", chunks=located, proof=store.sign(located_bytes(located)))])
    finally:
        client.close()
    assert deployed.pfs(deployed.remote, "get-file", "r", "master", "f").stdout == data
    assert deployed.daemon.pfs("fsck").returncode == 0


def test_a_mount_with_the_store_dir_moves_no_file_bytes_through_the_daemon(deployed, tmp_home):
    from types import SimpleNamespace

    from helpers import Mount, fuse_unavailable

    if reason := fuse_unavailable():
        pytest.skip(reason)
    data = os.urandom(3 << 20)
    deployed.pfs(deployed.remote, "create-repo", "r")
    deployed.pfs(deployed.direct, "put-file", "r", "master", "f", input=data)
    before = deployed.traffic()
    mountpoint = tmp_home / "mnt"
    mountpoint.mkdir()
    # The mount is a client like any other: PFS_ADDRESS on TCP and PFS_STORE_DIR.
    with Mount(SimpleNamespace(env=deployed.direct, home=deployed.daemon.home), mountpoint) as m:
        assert (m.path / "r" / "master" / "f").read_bytes() == data
        (m.path / "r" / "master" / "new").write_bytes(data[::-1])
    assert deployed.traffic() == before
    assert deployed.pfs(deployed.remote, "get-file", "r", "master", "new").stdout == data[::-1]
