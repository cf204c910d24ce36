"""put-file from object stores (moto's S3, gcp-storage-emulator, Azurite) and from pfs:// files of
the store, through the real `pfs` binary against a real daemon."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import AZURITE_KEY, BUCKET, Daemon, azurite_connection_string, rows
from pfsfuse.chunks import open_store

ACCOUNT = "devstoreaccount1"  # Azurite's


class Source:
    """A fresh prefix in the emulator's bucket of one backend: how to fill it, the URL put-file
    is given for a key, and what the daemon's environment needs to reach it."""

    def __init__(self, backend: str, request):
        self.backend = backend
        self.prefix = f"in-{os.urandom(4).hex()}"
        self.env: dict[str, str] = {}
        if backend == "s3":
            endpoint = request.getfixturevalue("moto").url
            self.env["AWS_ENDPOINT_URL"] = endpoint
            self.store = open_store(f"s3://{BUCKET}?endpoint={endpoint}")
        elif backend == "gcs":
            request.getfixturevalue("gcs")
            self.store = open_store(f"gs://{BUCKET}")
        else:
            self.azurite = request.getfixturevalue("azurite")
            self.store = open_store(f"az://{BUCKET}")

    def put(self, key: str, data: bytes) -> None:
        """An object under the prefix, with the SDK itself: keys our own stores refuse too."""
        name = f"{self.prefix}/{key}"
        if self.backend == "s3":
            self.store.client.put_object(Bucket=BUCKET, Key=name, Body=data)
        elif self.backend == "gcs":
            self.store.client.bucket(BUCKET).blob(name).upload_from_string(data)
        else:
            self.store.container.upload_blob(name, data, overwrite=True)

    def url(self, key: str = "", *, bucket: str = BUCKET) -> str:
        name = quote(f"{self.prefix}/{key}" if key else self.prefix)
        if self.backend == "s3":
            return f"s3://{bucket}/{name}"
        if self.backend == "gcs":
            return f"gs://{bucket}/{name}"
        return f"as://{ACCOUNT}/{bucket}/{name}"

    def other_form(self, key: str) -> str:
        """The same object in put-file's other form for the backend."""
        name = quote(f"{self.prefix}/{key}")
        if self.backend == "s3":
            return f"s3://{BUCKET}/{name}?endpoint={self.env['AWS_ENDPOINT_URL']}&region=us-east-1"
        if self.backend == "gcs":
            return f"gcs://{BUCKET}/{name}"
        return f"wasb://{BUCKET}@{ACCOUNT}.blob.core.windows.net/{name}"


@pytest.fixture(params=["s3", "gcs", "azure"])
def source(request):
    s = Source(request.param, request)
    try:
        yield s
    finally:
        s.store.close()


def _daemon(home: Path, env: dict[str, str]):
    d = Daemon(home)
    d.env.update(env)
    return d


@pytest.fixture
def served(source, tmp_home):
    """A daemon whose environment reaches the source's emulator (made after the emulator's
    fixture has set the credentials in ours)."""
    d = _daemon(tmp_home / "home", source.env)
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _pfs(d: Daemon, *args: str) -> str:
    return d.pfs(*args).stdout.decode()


def _get(d: Daemon, repo: str, path: str) -> bytes:
    return d.pfs("get-file", repo, "master", path).stdout


def _files(d: Daemon, repo: str, pattern: str) -> set[str]:
    return {r[0] for r in rows(_pfs(d, "glob-file", repo, "master", pattern)) if r[1] == "file"}


def _commits(d: Daemon, repo: str) -> int:
    return len(rows(_pfs(d, "list-commit", repo)))


def _fails(d: Daemon, *args: str) -> str:
    """Runs pfs, which must fail with one line on stderr; that line."""
    r = d.pfs(*args, check=False)
    err = r.stderr.decode()
    assert r.returncode != 0, f"pfs {' '.join(args)} should have failed: {r.stdout!r}"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_put_file_of_single_objects(source, served):
    big = os.urandom(20 << 20)  # several of the pieces a read asks for at once
    source.put("a.txt", b"alpha")
    source.put("sub dir/big.bin", big)
    _pfs(served, "create-repo", "r")
    _pfs(served, "put-file", "r", "master", "copy.txt", "-f", source.url("a.txt"))
    assert _get(served, "r", "copy.txt") == b"alpha"
    # Without PATH an object lands at its key, as pachctl puts it.
    _pfs(served, "put-file", "r", "master", "-f", source.url("sub dir/big.bin"))
    assert _get(served, "r", f"{source.prefix}/sub dir/big.bin") == big
    _pfs(served, "put-file", "r", "master", "other.txt", "-f", source.other_form("a.txt"))
    assert _get(served, "r", "other.txt") == b"alpha"
    _pfs(served, "put-file", "r", "master", "copy.txt", "-a", "-f", source.url("a.txt"))
    assert _get(served, "r", "copy.txt") == b"alphaalpha"


def test_put_file_recursive_takes_every_object_under_the_prefix(source, served):
    for key, data in {
        "dir/a.txt": b"a",
        "dir/sub/b c.txt": b"bc",
        "dir/.hidden": b"h",
        "dir/marker/": b"",  # a "directory" some tools make: not a file
        "dirx/other.txt": b"not under dir/",
        "top.txt": b"top",
    }.items():
        source.put(key, data)
    _pfs(served, "create-repo", "r")
    _pfs(served, "put-file", "r", "master", "in", "-r", "-f", source.url("dir"))
    assert _files(served, "r", "in/**") == {"in/a.txt", "in/sub/b c.txt", "in/.hidden"}
    assert _get(served, "r", "in/sub/b c.txt") == b"bc"
    assert _commits(served, "r") == 1  # one atomic write
    # Without PATH, the prefix's own path; a trailing '/' changes nothing.
    _pfs(served, "put-file", "r", "master", "-r", "-f", source.url("dir/"))
    p = source.prefix
    assert _files(served, "r", f"{p}/**") == {f"{p}/dir/a.txt", f"{p}/dir/sub/b c.txt", f"{p}/dir/.hidden"}
    # -r of one object puts it, as -r of a local file does; of the whole prefix, everything.
    _pfs(served, "put-file", "r", "master", "one.txt", "-r", "-f", source.url("top.txt"))
    assert _get(served, "r", "one.txt") == b"top"
    _pfs(served, "put-file", "r", "master", "all", "-r", "-f", source.url())
    assert len(_files(served, "r", "all/**")) == 5


def test_bad_sources_fail_with_one_line_and_commit_nothing(source, served):
    source.put("a.txt", b"alpha")
    source.put("dir/b.txt", b"b")
    _pfs(served, "create-repo", "r")
    _pfs(served, "put-file", "r", "master", "first", "-f", source.url("a.txt"))
    missing = source.url("missing.txt")
    assert missing in _fails(served, "put-file", "r", "master", "x", "-f", missing)
    # A good source and a bad one in one put: neither lands.
    _fails(served, "put-file", "r", "master", "-f", source.url("a.txt"), "-f", missing)
    nobucket = source.url("a.txt", bucket="no-such-bucket")
    assert nobucket in _fails(served, "put-file", "r", "master", "x", "-f", nobucket)
    assert "no-such-bucket" in _fails(served, "put-file", "r", "master", "x", "-r", "-f", nobucket)
    scheme_only = source.url().partition("//")[0] + "//"  # no bucket, no key
    assert "names no" in _fails(served, "put-file", "r", "master", "x", "-f", scheme_only)
    assert "names no object" in _fails(served, "put-file", "r", "master", "x", "-f", source.url("dir/"))
    assert _commits(served, "r") == 1
    assert _files(served, "r", "**") == {"first"}


def test_put_file_over_denied_azure_access(request, tmp_home):
    azurite = request.getfixturevalue("azurite")
    src = Source("azure", request)
    try:
        src.put("a.txt", b"alpha")
    finally:
        src.store.close()
    wrong_key = azurite_connection_string(azurite.port).replace(AZURITE_KEY, "d3Jvbmc=" * 11)
    d = _daemon(tmp_home / "home", {"AZURE_STORAGE_CONNECTION_STRING": wrong_key}).start()
    try:
        _pfs(d, "create-repo", "r")
        err = _fails(d, "put-file", "r", "master", "x", "-f", src.url("a.txt"))
        assert "403" in err or "Authorization" in err, err
        # A URL naming another storage account than the credentials' is refused, not misread.
        other = src.url("a.txt").replace(ACCOUNT, "someoneelse")
        assert "someoneelse" in _fails(d, "put-file", "r", "master", "x", "-f", other)
        assert _commits(d, "r") == 0
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def test_put_file_from_pfs(daemon):
    d = daemon
    _pfs(d, "create-repo", "src")
    for path, data in {"one.txt": b"1\n2\n", "dir/a": b"a", "dir/sub/b": b"b"}.items():
        d.pfs("put-file", "src", "master", path, input=data)
    _pfs(d, "create-repo", "dst")
    _pfs(d, "put-file", "dst", "master", "x.txt", "-f", "pfs://src/master/one.txt")
    assert _get(d, "dst", "x.txt") == b"1\n2\n"
    # Copied by reference: the source's size and content hash.
    same = [
        rows(_pfs(d, "inspect-file", repo, "master", path)) for repo, path in [("src", "one.txt"), ("dst", "x.txt")]
    ]
    assert same[0][2:] == same[1][2:]  # Size and Hash
    # -r merges the directory's files into what is there; without -r a directory is refused.
    d.pfs("put-file", "dst", "master", "in/kept", input=b"k")
    _pfs(d, "put-file", "dst", "master", "in", "-r", "-f", "pfs://src/master/dir")
    assert _files(d, "dst", "in/**") == {"in/kept", "in/a", "in/sub/b"}
    assert "use -r" in _fails(d, "put-file", "dst", "master", "y", "-f", "pfs://src/master/dir")
    # No PATH: the source's path. A commit other than a branch head.
    d.pfs("put-file", "src", "master", "one.txt", input=b"changed")
    _pfs(d, "put-file", "dst", "master", "-f", "pfs://src/master^/one.txt")
    assert _get(d, "dst", "one.txt") == b"1\n2\n"
    # --split reads the file and splits it.
    _pfs(d, "put-file", "dst", "master", "lines", "--split", "line", "-f", "pfs://src/master^/one.txt")
    assert _files(d, "dst", "lines/*") == {"lines/0000000000000000", "lines/0000000000000001"}
    before = _commits(d, "dst")
    for bad in ("pfs://src", "pfs://host:650/src/master/one.txt", "pfs://src/master/nothing"):
        assert bad in _fails(d, "put-file", "dst", "master", "z", "-f", bad)
    assert _commits(d, "dst") == before


def _peak_rss(d: Daemon) -> int:
    """The daemon's peak resident memory so far, in bytes (VmHWM)."""
    with open(f"/proc/{d.proc.pid}/status") as f:
        [kib] = [line.split()[1] for line in f if line.startswith("VmHWM:")]
    return int(kib) << 10


@pytest.mark.slow
def test_a_big_object_is_streamed_not_held(request, tmp_home):
    """After a 48 MiB object, a 4 times bigger one does not raise the daemon's peak memory by
    anything like its size: a put holds its chunker's block (36 MiB, one per thread) and a pack
    or two, whatever the object's size. Held whole, it would grow by 144 MiB or more."""
    src = Source("s3", request)
    block = os.urandom(1 << 20)
    sizes = {"medium": 48, "big": 192}  # MiB
    try:
        for name, mib in sizes.items():
            src.put(name, b"".join(block[i:] + block[:i] for i in range(mib)))  # no chunk repeats
    finally:
        src.store.close()
    d = _daemon(tmp_home / "home", src.env).start()
    try:
        _pfs(d, "create-repo", "r")
        _pfs(d, "put-file", "r", "master", "medium", "-f", src.url("medium"))
        before = _peak_rss(d)
        _pfs(d, "put-file", "r", "master", "big", "-f", src.url("big"))
        grew = _peak_rss(d) - before
        assert grew < 96 << 20, f"the daemon's peak memory grew by {grew >> 20} MiB"
        assert rows(_pfs(d, "list-file", "r", "master"))[0] == ["big", "file", "192MiB"]
    finally:
        try:
            d.stop()
        finally:
            d.kill()
