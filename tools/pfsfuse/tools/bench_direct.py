"""`pfs bench direct`: clients on TCP that read chunks from the object store themselves, against
clients whose bytes go through the daemon; and streamed put-file from several clients at once.

One daemon listens on TCP over a store in moto's S3 (started here on 127.0.0.1). Clients are real
`pfs` processes with PFS_ADDRESS set:

- read: 4 long-lived clients (as worker sidecars are: each process has its object-store SDK
  loaded before the clock starts) read the same file at once, without a chunk cache, with
  PFS_STORE_DIR (direct: the daemon serves read plans only) against without it (the daemon
  streams every byte). Aggregate MiB/s; goal: direct >= 1x. The daemon's traffic counter must
  show no chunk bytes served to the direct clients.
- write: 4 long-lived clients put a file each at once, each onto its own branch of the daemon over
  moto, new data each run, with PFS_STORE_DIR (direct: the clients store the packs and send only their locations)
  against without it. Aggregate MiB/s; goal: direct >= 1x, and no bytes received by the daemon.
- put: 1, 2 and 4 long-lived clients put a file of PUT_SIZE each over TCP at once, each onto its
  own branch, to a second daemon over a local store (so that moto's own speed is not what is
  measured). Aggregate MiB/s against one client's; goal: 4 clients >= 2x one. Beside it, the cores
  one upload keeps busy (daemon and client CPU seconds over wall seconds) and so the most the
  machine's cores allow: 2x needs one upload to use at most half of them.

Run it as `pfs bench direct [--runs N]`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pfsfuse.api.remote import RemoteClient
from pfsfuse.api.types import Traffic
from pfsfuse.home import Home
from pfsfuse.tools.bench import PFS, Figure, MiB, run_sections
from pfsfuse.tools.bench_objstore import BUCKET, Moto

SIZE = 64 * MiB  # per client
WRITE_SIZE = 32 * MiB  # per client and run, all kept in moto's memory
PUT_SIZE = 256 * MiB  # per client, to a local store: an upload long enough that start-ups do not count
CLIENTS = 4
SECTIONS = ["read", "write", "put"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DirectBench:
    def __init__(self, work: Path, runs: int):
        self.work, self.runs = work, runs
        self.home = work / "home"
        self.port = _free_port()
        self.moto: Moto | None = None
        self.daemons: list[subprocess.Popen] = []
        self.local_port = _free_port()
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.remote = {**self.env, "PFS_ADDRESS": f"127.0.0.1:{self.port}", "PFS_HOME": str(work / "client")}
        self.local = {**self.remote, "PFS_ADDRESS": f"127.0.0.1:{self.local_port}"}
        self.store_dir = work / "store"

    def start(self) -> None:
        self.moto = Moto(self.work)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.moto.url, region_name="us-east-1", **_keys())
        s3.create_bucket(Bucket=BUCKET)
        s3.close()
        storage = f"s3://{BUCKET}/pfs?endpoint={self.moto.url}&region=us-east-1"
        self._daemon(self.home, self.port, "--storage", storage)
        self._daemon(self.work / "local", self.local_port)
        self.store_dir.mkdir()
        shutil.copy(self.home / "store.json", self.store_dir / "store.json")
        self.src = self.work / "src.bin"
        self.src.write_bytes(os.urandom(SIZE))

    def _daemon(self, home: Path, port: int, *args: str) -> None:
        """`pfs serve` of `home` on TCP `port`, once it answers."""
        home.mkdir()
        env = {**self.env, "PFS_HOME": str(home)}
        argv = [PFS, "serve", "--listen", f"127.0.0.1:{port}", "--insecure", *args]
        with open(self.work / f"{home.name}.log", "ab") as log:
            daemon = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        self.daemons.append(daemon)
        client = {**self.remote, "PFS_ADDRESS": f"127.0.0.1:{port}"}
        deadline = time.monotonic() + 60
        while subprocess.run([PFS, "version"], env=client, capture_output=True).returncode:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start; see {self.work / f'{home.name}.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            for daemon in self.daemons:
                if daemon.poll() is None:
                    daemon.terminate()
                    daemon.wait(timeout=30)
        finally:
            if self.moto is not None:
                self.moto.stop()

    def _pfs(self, env: dict, *args: str, input: bytes | None = None) -> None:
        r = subprocess.run([PFS, *args], env=env, input=input, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode:
            raise RuntimeError(f"pfs {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")

    def _traffic(self) -> Traffic:
        client = RemoteClient(f"unix:{self.home / 'pfs.sock'}", Home(self.home))
        try:
            return client.traffic()
        finally:
            client.close()

    def _at_once(self, n: int, job: Callable[[int], None]) -> float:
        """Seconds for `n` clients running `job(i)` at the same time."""
        with ThreadPoolExecutor(n) as pool:
            t = time.perf_counter()
            list(pool.map(job, range(n)))
            return time.perf_counter() - t

    def read(self) -> list[Figure]:
        self._pfs(self.remote, "create-repo", "reads")
        self._pfs(self.remote, "put-file", "reads", "master", "f", "-f", str(self.src))
        self._pfs(self.remote, "put-file", "reads", "master", "tiny", input=b"x")
        direct = {**self.remote, "PFS_STORE_DIR": str(self.store_dir), "PFS_CACHE_SIZE": "0"}
        readers = {
            "direct": [_Client(direct) for _ in range(CLIENTS)],
            "daemon": [_Client(self.remote) for _ in range(CLIENTS)],
        }
        times: dict[str, list[float]] = {"direct": [], "daemon": []}
        leaked = 0
        try:
            for group in readers.values():
                for r in group:
                    r.read("tiny")  # connects, and opens the object store where it may
            for _ in range(self.runs):
                for name, group in readers.items():
                    before = self._traffic().served

                    def job(i: int, group: list[_Client] = group) -> None:
                        group[i].read("f")

                    times[name].append(self._at_once(CLIENTS, job))
                    if name == "direct":
                        leaked += self._traffic().served - before
        finally:
            for group in readers.values():
                for r in group:
                    r.close()
        total = CLIENTS * SIZE / MiB
        rate = {k: total / statistics.median(v) for k, v in times.items()}
        spread = {k: f"{total / max(v):.0f}-{total / min(v):.0f}" for k, v in times.items()}
        name = f"get-file, {CLIENTS} TCP clients, direct vs via pfsd (MiB/s {spread['direct']} vs {spread['daemon']})"
        return [
            Figure(name, rate["direct"], rate["daemon"], "MiB/s", ">= 1x", rate["direct"] >= rate["daemon"]),
            Figure("chunk bytes pfsd served to the direct clients", leaked, None, "B", "0", leaked == 0),
        ]

    def write(self) -> list[Figure]:
        self._pfs(self.remote, "create-repo", "writes")
        direct = {**self.remote, "PFS_STORE_DIR": str(self.store_dir), "PFS_CACHE_SIZE": "0"}
        clients = {
            "direct": [_Client(direct) for _ in range(CLIENTS)],
            "daemon": [_Client(self.remote) for _ in range(CLIENTS)],
        }
        times: dict[str, list[float]] = {"direct": [], "daemon": []}
        received = 0
        try:
            tiny = self.work / "tiny"
            tiny.write_bytes(b"x")
            for name, group in clients.items():
                for i, c in enumerate(group):
                    c.put(f"warm-{name}-{i}", tiny)  # connects, and opens the object store where it may
            for run in range(self.runs):
                for name, group in clients.items():
                    srcs = self._sources(WRITE_SIZE, fresh=True)  # nothing the store has already
                    before = self._traffic().received

                    def put(
                        i: int, group: list[_Client] = group, srcs: list[Path] = srcs, tag: str = f"{name}-{run}"
                    ) -> None:
                        group[i].put(f"{tag}-{i}", srcs[i])

                    times[name].append(self._at_once(CLIENTS, put))
                    if name == "direct":
                        received += self._traffic().received - before
        finally:
            for group in clients.values():
                for c in group:
                    c.close()
        total = CLIENTS * WRITE_SIZE / MiB
        rate = {k: total / statistics.median(v) for k, v in times.items()}
        spread = {k: f"{total / max(v):.0f}-{total / min(v):.0f}" for k, v in times.items()}
        name = f"put-file, {CLIENTS} TCP clients, direct vs via pfsd (MiB/s {spread['direct']} vs {spread['daemon']})"
        return [
            Figure(name, rate["direct"], rate["daemon"], "MiB/s", ">= 1x", rate["direct"] >= rate["daemon"]),
            Figure("bytes pfsd received from the direct writers", received, None, "B", "0", received == 0),
        ]

    def _sources(self, size: int = SIZE, fresh: bool = False, count: int = CLIENTS) -> list[Path]:
        """A file per client, of different data: no client deduplicates another's; `fresh`: new
        data, which no earlier run stored."""
        srcs = []
        for i in range(count):
            src = self.work / f"put-{i}.bin"
            if fresh or not src.exists() or src.stat().st_size != size:
                src.write_bytes(os.urandom(size))
            srcs.append(src)
        return srcs

    def put(self) -> list[Figure]:
        """1, 2 and 4 long-lived clients put PUT_SIZE each at once; with one client, the CPU the
        daemon and the client spend against the wall time says how many cores one upload uses,
        and so what the machine's cores allow at most."""
        self._pfs(self.local, "create-repo", "puts")
        clients = [_Client(self.local) for _ in range(CLIENTS)]
        daemon = self.daemons[-1].pid
        rates: dict[int, list[float]] = {}
        cores: list[float] = []
        try:
            tiny = self.work / "tiny-put"
            tiny.write_bytes(b"x")
            for i, c in enumerate(clients):
                c.put(f"warm-{i}", tiny, repo="puts")  # connects before the clock starts
            for n in (1, 2, 4):
                rates[n] = []
                for run in range(self.runs):
                    srcs = self._sources(PUT_SIZE, fresh=True, count=n)  # nothing stored before: no dedup

                    def job(i: int, n=n, run=run, srcs=srcs) -> None:
                        clients[i].put(f"b{n}-{run}-{i}", srcs[i], repo="puts")

                    before = _cpu(daemon) + sum(_cpu(c.proc.pid) for c in clients[:n])
                    wall = self._at_once(n, job)
                    used = _cpu(daemon) + sum(_cpu(c.proc.pid) for c in clients[:n]) - before
                    rates[n].append(n * PUT_SIZE / MiB / wall)
                    if n == 1:
                        cores.append(used / wall)
        finally:
            for c in clients:
                c.close()
        one = statistics.median(rates[1])
        per_client = statistics.median(cores)
        ceiling = (os.cpu_count() or 1) / per_client
        out = [
            Figure(
                f"put-file over TCP, 1 client: cores used (CPU s / wall s, {min(cores):.2f}-{max(cores):.2f})",
                per_client,
                None,
                "cores",
                "",
                True,
            ),
            Figure(
                f"put-file over TCP, the most N clients reach vs 1 ({os.cpu_count()} cores / cores used)",
                ceiling,
                None,
                "x",
                "",
                True,
            ),
        ]
        for n in (2, 4):
            ours = statistics.median(rates[n])
            goal = 2.0 if n == 4 else 1.0
            ranges = " vs ".join(f"{min(rates[k]):.0f}-{max(rates[k]):.0f}" for k in (n, 1))
            name = f"put-file over TCP, {n} clients vs 1 (MiB/s {ranges})"
            out.append(Figure(name, ours, one, "MiB/s", f">= {goal:g}x", ours >= goal * one))
        return out


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Client:
    """A long-lived client process (`python -m pfsfuse.tools.bench_direct`), as a worker sidecar
    is: it reads reads@master:PATH, or puts a local file into writes@BRANCH:f, on request."""

    def __init__(self, env: dict):
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pfsfuse.tools.bench_direct"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{line}\n")
        self.proc.stdin.flush()
        if not self.proc.stdout.readline().strip().isdigit():
            raise RuntimeError(f"a benchmark client failed on {line!r}")

    def read(self, path: str) -> None:
        self._ask(f"read {path}")

    def put(self, branch: str, src: Path, repo: str = "writes") -> None:
        self._ask(f"put {repo} {branch} {src}")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _serve() -> None:
    """The benchmark's client: for each request on stdin, the bytes it read or wrote."""
    import sys

    from pfsfuse.api.connect import connect
    from pfsfuse.api.types import Put

    client = connect(start=False)
    for line in sys.stdin:
        verb, *args = line.split()
        if verb == "read":
            print(sum(len(p) for p in client.get_file("reads", "master", args[0])), flush=True)
        else:
            print(client.write_files(args[0], args[1], [Put("f", local=args[2])]).bytes, flush=True)
    client.close()


def _keys() -> dict:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def run(
    runs: int, workdir: str | None, report: Callable[[Figure], None], sections: list[str] | None = None
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-direct-", dir=workdir or "/tmp"))
    return run_sections(DirectBench(base, runs), sections or SECTIONS, base, report)


if __name__ == "__main__":
    _serve()
