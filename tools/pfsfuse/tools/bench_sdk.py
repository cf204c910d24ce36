"""`pfs bench sdk`: the access surfaces side by side in one run, over one daemon.

- read: one file (1 GiB by default), warm, read whole through fsspec (`pfs://`, 8 MiB reads),
  through the S3 gateway (`pfs serve --s3`) with boto3, through the mount (`cat`) and with
  `pfs get-file`; beside the disk (`cat` of the source file) and moto's S3 server serving the
  same bytes to boto3. Goals: fsspec within 1.2x of get-file, the gateway at least as fast as moto.
- list: a directory of 100,000 files listed through fsspec (`ls`, a fresh cache each run), through
  the gateway (boto3's ListObjectsV2 paginator, 1,000 keys a page; and the same pages fetched
  over raw HTTP, without boto3's XML parsing), beside `pfs list-file`. Goal: fsspec within 1.2x
  of list-file.

MiB/s and seconds are medians of `--runs`, with their ranges. `python -m pfsfuse.tools.bench_sdk
--size-mib 64 --files 10000` runs it small.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pfsfuse.tools.bench import PFS, Figure, MiB, run_sections, start_daemon
from pfsfuse.tools.bench_mount import mounted
from pfsfuse.tools.bench_objstore import Moto

SECTIONS = ["read", "list"]
_BLOCK = 8 * MiB
_KEYS = {"aws_access_key_id": "any", "aws_secret_access_key": "any", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, config=Config(s3={"addressing_style": "path"}), **_KEYS)


def _drain(body) -> int:
    n = 0
    while piece := body.read(_BLOCK):
        n += len(piece)
    return n


class SdkBench:
    def __init__(self, work: Path, runs: int, size_mib: int = 1024, files: int = 100_000):
        self.work, self.runs = work, runs
        self.size, self.files = size_mib * MiB, files
        self.home = work / "home"
        self.env = {**os.environ, "PFS_HOME": str(self.home), "PFS_ADDRESS": f"unix:{self.home}/pfs.sock"}
        self.s3_url = f"http://127.0.0.1:{_free_port()}"
        self.mnt = work / "mnt"
        self.daemon: subprocess.Popen | None = None
        self.moto: Moto | None = None

    def start(self) -> None:
        argv = ["--s3", self.s3_url.removeprefix("http://"), "--insecure"]
        self.daemon = start_daemon(self.work, self.home, self.env, *argv)
        self.moto = Moto(self.work)
        self._pfs("create-repo", "bench")

    def stop(self) -> None:
        try:
            if mounted(self.mnt):
                subprocess.run([PFS, "unmount", str(self.mnt)], env=self.env, capture_output=True, timeout=600)
        finally:
            try:
                if self.daemon is not None and self.daemon.poll() is None:
                    self.daemon.terminate()
                    self.daemon.wait(timeout=60)
            finally:
                if self.moto is not None:
                    self.moto.stop()

    def _pfs(self, *args: str, stdout=subprocess.DEVNULL) -> None:
        r = subprocess.run([PFS, *args], env=self.env, stdout=stdout, stderr=subprocess.PIPE)
        if r.returncode:
            raise RuntimeError(f"pfs {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")

    def _times(self, fn: Callable[[], object]) -> list[float]:
        fn()  # warm: connections made, caches filled
        out = []
        for _ in range(self.runs):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    def _fsspec(self):
        from pfsfuse.fsspec_pfs import PfsFileSystem

        return PfsFileSystem(address=self.env["PFS_ADDRESS"], skip_instance_cache=True)

    # -- read -----------------------------------------------------------------------------------

    def read(self) -> list[Figure]:
        assert self.moto is not None
        src = self.work / "big.bin"
        with open(src, "wb") as f:
            for _ in range(self.size // MiB):
                f.write(os.urandom(MiB))
        self._pfs("put-file", "bench", "master", "big.bin", "-f", str(src))
        moto = _s3(self.moto.url)
        moto.create_bucket(Bucket="ref")
        moto.upload_file(str(src), "ref", "big.bin")
        gateway = _s3(self.s3_url)
        fs = self._fsspec()
        self.mnt.mkdir()
        self._pfs("mount", str(self.mnt))

        def fsspec_read() -> None:
            with fs.open("pfs://bench@master/big.bin", "rb", block_size=_BLOCK) as f:
                assert _drain(f) == self.size

        def cat(path: Path) -> Callable[[], object]:
            return lambda: subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)

        times = {
            "get-file": self._times(lambda: self._pfs("get-file", "bench", "master", "big.bin")),
            "fsspec": self._times(fsspec_read),
            "gateway": self._times(lambda: _drain(gateway.get_object(Bucket="master.bench", Key="big.bin")["Body"])),
            "moto": self._times(lambda: _drain(moto.get_object(Bucket="ref", Key="big.bin")["Body"])),
            "mount": self._times(cat(self.mnt / "bench" / "master" / "big.bin")),
            "disk": self._times(cat(src)),
        }
        mib = self.size / MiB
        rate = {k: mib / statistics.median(v) for k, v in times.items()}
        spread = {k: f"{mib / max(v):.0f}-{mib / min(v):.0f}" for k, v in times.items()}
        size = f"{self.size // MiB} MiB" if self.size < 1024 * MiB else f"{self.size / (1024 * MiB):g} GiB"

        def fig(ours: str, ref: str, goal: str, ok: Callable[[float], bool]) -> Figure:
            name = f"read {size}: {ours} vs {ref} (MiB/s {spread[ours]} vs {spread[ref]})"
            return Figure(name, rate[ours], rate[ref], "MiB/s", goal, ok(rate[ours] / rate[ref]))

        return [
            fig("fsspec", "get-file", ">= 0.83x", lambda r: r >= 1 / 1.2),
            fig("gateway", "moto", ">= 1x", lambda r: r >= 1.0),
            fig("mount", "disk", "", lambda r: True),
            fig("get-file", "disk", "", lambda r: True),
        ]

    # -- list -----------------------------------------------------------------------------------

    def list(self) -> list[Figure]:
        tree = self.work / "many"
        tree.mkdir()
        for i in range(self.files):
            (tree / f"f{i:07d}").write_bytes(b"%d\n" % i)
        self._pfs("put-file", "bench", "master", "many", "-r", "-f", str(tree))
        gateway = _s3(self.s3_url)

        def keys(client, bucket: str) -> None:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="many/")
            assert sum(p.get("KeyCount", 0) for p in pages) == self.files

        def raw_pages() -> None:  # the gateway's side alone: boto3's XML parsing left out
            import re

            import httpx

            token, n = None, 0
            with httpx.Client(base_url=self.s3_url) as http:
                while True:
                    q = {"list-type": "2", "prefix": "many/", **({"continuation-token": token} if token else {})}
                    body = http.get("/master.bench", params=q).text
                    n += body.count("<Key>")
                    m = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", body)
                    if m is None:
                        break
                    token = m[1]
            assert n == self.files

        def fsspec_ls() -> None:
            assert len(self._fsspec().ls("pfs://bench@master/many", detail=True)) == self.files

        times = {
            "list-file": self._times(lambda: self._pfs("list-file", "bench", "master", "many")),
            "fsspec": self._times(fsspec_ls),
            "gateway": self._times(lambda: keys(gateway, "master.bench")),
            "raw HTTP": self._times(raw_pages),
        }
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in times.items()}

        def fig(ours: str, ref: str, goal: str, ok: bool) -> Figure:
            name = f"list {self.files:,} files: {ours} vs {ref} (s {spread[ours]} vs {spread[ref]})"
            return Figure(name, med[ours], med[ref], "s", goal, ok)

        return [
            fig("fsspec", "list-file", "<= 1.2x", med["fsspec"] <= 1.2 * med["list-file"]),
            fig("gateway", "list-file", "", True),
            fig("raw HTTP", "list-file", "", True),
        ]


def run(
    runs: int,
    workdir: str | None,
    report: Callable[[Figure], None],
    sections: list[str] | None = None,
    size_mib: int = 1024,
    files: int = 100_000,
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-sdk-", dir=workdir or "/tmp"))
    return run_sections(SdkBench(base, runs, size_mib, files), sections or SECTIONS, base, report)


if __name__ == "__main__":
    from pfsfuse.tools.bench import HEADER

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dir", dest="workdir")
    p.add_argument("--size-mib", type=int, default=1024, help="the file read (default 1 GiB)")
    p.add_argument("--files", type=int, default=100_000, help="the files listed (default 100,000)")
    p.add_argument("--only", action="append", choices=SECTIONS)
    a = p.parse_args()
    print(HEADER, flush=True)
    run(a.runs, a.workdir, lambda f: print(f.row(), flush=True), a.only, a.size_mib, a.files)
