"""The mount as a disk: `pfs mount` beside JuiceFS and the plain disk, in the same run.

    pfs bench posix [--runs 3] [--dir /tmp] [--only fio|sqlite|ls_stats]

- fio: random 4 KiB writes with an fsync every 32 writes into one file of a branch (IOPS).
  fio is installed with apt-get when missing (said so on stderr).
- sqlite: a database in a branch taking transactions of inserts, updates and deletes (seconds).
- ls_stats: `ls -l` of a 100,000-entry directory whose entries carry a stat (mode, owner, times)
  beside one whose entries carry none (as stored before stats were kept), cold: the cost of the
  metadata kept per file.

Each figure is the median of `runs` runs, with their range in brackets; the ratio is oriented so
that higher is better. The scratch store, JuiceFS (SQLite metadata, local file storage) and the
disk's directory share one scratch directory, so all sit on the same disk.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pfsfuse.api.types import Put
from pfsfuse.tools.bench import Figure, run_sections, timed
from pfsfuse.tools.bench_mount import MountBench, TimeFigure, run_quiet, wait_until

FIO_SIZE = "32M"
FIO_SECONDS = 10
SQL_TRANSACTIONS = 200


def _spread(values: list[float]) -> str:
    return f"[{min(values):.3g}-{max(values):.3g}]"


def find_fio() -> str:
    """fio on PATH, or installed now with apt-get (root only)."""
    found = shutil.which("fio")
    if found:
        return found
    print("note: fio is not installed: apt-get install -y fio", file=sys.stderr, flush=True)
    run_quiet("apt-get", "install", "-y", "-q", "fio", timeout=900)
    found = shutil.which("fio")
    if not found:
        raise RuntimeError("apt-get installed fio but it is not on PATH")
    return found


def sqlite_workload(db: Path, transactions: int) -> None:
    """Inserts, updates and deletes, one small transaction at a time (each one an fsync or two,
    as an application's writes are)."""
    con = sqlite3.connect(db)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
        con.commit()
        for i in range(transactions):
            with con:
                con.executemany("INSERT INTO t (v, n) VALUES (?, ?)", [(f"row {i}-{j}" * 8, j) for j in range(20)])
                con.execute("UPDATE t SET n = n + 1 WHERE id % 7 = ?", (i % 7,))
                con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 5)")
    finally:
        con.close()


class PosixBench(MountBench):
    def __init__(self, work: Path, runs: int, small: bool = False):
        super().__init__(work, runs, small)
        self.fio_seconds = 3 if small else FIO_SECONDS
        self.transactions = SQL_TRANSACTIONS // (8 if small else 1)

    def start(self) -> None:
        super().start()
        self.pfs("create-repo", "posix")
        self.client.write_files("posix", "master", [Put("README", stream=io.BytesIO(b"x\n"))])  # makes master
        (self.jfs_mnt / "posix").mkdir()
        (self.disk / "posix").mkdir()

    def places(self) -> dict[str, Path]:
        return {"pfs": self.pfs_mnt / "posix" / "master", "jfs": self.jfs_mnt / "posix", "disk": self.disk / "posix"}

    def _settled(self) -> None:
        """Our mount's commit finished: a run does not pay for the one before it."""

        def done() -> bool:
            c = self.client.inspect_commit("posix", "master")
            return c.finished is not None

        wait_until(done, 600, "the mount's commit")

    def fio(self) -> list[Figure]:
        fio = find_fio()
        iops: dict[str, list[float]] = {w: [] for w in self.places()}
        for run in range(self.runs):
            for which, where in self.places().items():
                out = subprocess.run(
                    [
                        fio,
                        "--name=randw",
                        f"--filename={where}/fio-{run}.dat",
                        "--rw=randwrite",
                        "--bs=4k",
                        f"--size={FIO_SIZE}",
                        "--fsync=32",
                        "--ioengine=psync",
                        f"--runtime={self.fio_seconds}",
                        "--time_based",
                        "--output-format=json",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"fio on {which} exited {out.returncode}: {out.stderr.strip()}")
                iops[which].append(json.loads(out.stdout)["jobs"][0]["write"]["iops"])
                if which == "pfs":
                    self._settled()
        m = {w: statistics.median(v) for w, v in iops.items()}
        return [
            Figure(
                f"fio 4 KiB random writes, fsync each 32 (IOPS) {_spread(iops['pfs'])} vs JuiceFS "
                f"{_spread(iops['jfs'])}",
                m["pfs"],
                m["jfs"],
                "IOPS",
                ">= 2",
                m["pfs"] >= 2 * m["jfs"],
            ),
            Figure(f"  the same vs disk {_spread(iops['disk'])}", m["pfs"], m["disk"], "IOPS", "-", True),
        ]

    def sqlite(self) -> list[Figure]:
        times: dict[str, list[float]] = {w: [] for w in self.places()}
        for run in range(self.runs):
            for which, where in self.places().items():
                db = where / f"bench-{run}.db"
                times[which].append(timed(functools.partial(sqlite_workload, db, self.transactions)))
                if which == "pfs":
                    self._settled()
        m = {w: statistics.median(v) for w, v in times.items()}
        n = self.transactions
        return [
            TimeFigure(
                f"sqlite: {n} transactions of inserts, updates, deletes (s) {_spread(times['pfs'])} vs disk "
                f"{_spread(times['disk'])}",
                m["pfs"],
                m["disk"],
                "s",
                "<= 5x time",
                m["pfs"] <= 5 * m["disk"],
            ),
            TimeFigure(f"  the same vs JuiceFS {_spread(times['jfs'])}", m["pfs"], m["jfs"], "s", "-", True),
        ]

    def ls_stats(self) -> list[Figure]:
        n = self.n_100k
        self.pfs("create-repo", "stats")
        for name, with_stat in (("plain", False), ("stat", True)):
            src = self.src / "stats" / name
            src.mkdir(parents=True)
            for i in range(n):
                (src / f"file-{i:06d}.dat").touch()
            if with_stat:  # put-file -r keeps each file's stat
                self.pfs("put-file", "stats", "master", name, "-r", "-f", str(src))
            else:  # none: what the store held of each file before stats were kept
                ops = [Put(f"{name}/file-{i:06d}.dat", stream=io.BytesIO(b"")) for i in range(n)]
                self.client.write_files("stats", "master", ops)
        top = self.pfs_mnt / "stats" / "master"
        times: dict[str, list[float]] = {"stat": [], "plain": []}
        for _ in range(self.runs):
            for name, done in times.items():
                self.cold("pfs")
                done.append(timed(functools.partial(run_quiet, "ls", "-l", "--color=never", str(top / name))))
        m = {w: statistics.median(v) for w, v in times.items()}
        return [
            TimeFigure(
                f"ls -l of {n:,} entries with stats {_spread(times['stat'])} vs without "
                f"{_spread(times['plain'])}, cold (s){self.cold_note}",
                m["stat"],
                m["plain"],
                "s",
                ">= 0.95",
                m["plain"] >= 0.95 * m["stat"],
            )
        ]


SECTIONS = ["fio", "sqlite", "ls_stats"]


def run(
    runs: int,
    workdir: str | None,
    report: Callable[[Figure], None],
    small: bool = False,
    sections: list[str] | None = None,
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-posix-", dir=workdir or "/tmp"))
    return run_sections(PosixBench(base, runs, small), sections or SECTIONS, base, report)
