"""`pfs bench bigdir`: one flat directory of `--entries` files through the mount and the daemon,
beside the same directory on the disk.

    pfs bench bigdir --entries 1000000 [--runs 3] [--dir /tmp]

The local tree (files `f0000000`, `f0000001`... each holding its number) is made once and kept
where `PFS_BENCH_BIGDIR_SRC` says (default: in the scratch directory, removed at the end), and is
put into the store with `put-file -r`. Then, taking turns with the disk, each cold (the mount
mounted afresh, the page cache dropped when run as root): `find DIR`, `find DIR -printf %s` (a
stat of each), `ls -l DIR` and `ls -f DIR`, and `find` again on the same, now warm, mount;
`list-file` of the directory, its first line and the whole listing, against `ls -f` on the disk;
a glob of 10 names under a fixed prefix, through the client (the daemon's work and one round
trip) and through the CLI. The resident memory of the daemon (started afresh once the tree is
stored) and of the mount (`VmRSS`, and the peak `VmHWM`) is printed after each step: their goal
is 256 MiB each, whatever the directory's size.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pfsfuse.tools.bench import PFS, Figure, drop_caches, first_and_all, run_sections, start_daemon, stop_daemon, timed
from pfsfuse.tools.bench_mount import TimeFigure, mounted, run_quiet

if TYPE_CHECKING:
    from pfsfuse.api.remote import RemoteClient

MEMORY_GOAL = 256 << 20


def make_source(path: Path, n: int) -> None:
    """`n` files f0000000... each holding its number, made once: a tree of that size already at
    `path` is kept, anything else there is replaced (made aside, then renamed into place)."""
    if path.is_dir() and sum(1 for _ in os.scandir(path)) == n:
        return
    shutil.rmtree(path, ignore_errors=True)
    aside = path.with_name(path.name + ".making")
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    fd = os.open(aside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            f = os.open(f"f{i:07d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            os.write(f, b"%d\n" % i)
            os.close(f)
    finally:
        os.close(fd)
    aside.rename(path)


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


class BigDirBench:
    def __init__(self, work: Path, runs: int, entries: int):
        self.work = work
        self.runs = runs
        self.n = entries
        self.home = work / "home"
        self.env = {**os.environ, "PFS_HOME": str(self.home), "PFS_ADDRESS": f"unix:{self.home}/pfs.sock"}
        kept = os.environ.get("PFS_BENCH_BIGDIR_SRC")
        self.src = Path(kept) / f"flat{entries}" if kept else work / "src"
        self.mnt = work / "mnt"
        self.daemon: subprocess.Popen | None = None
        self._client: RemoteClient | None = None
        self.peaks = {"daemon": 0, "mount": 0}
        self.cold_note = "" if os.geteuid() == 0 else " (page cache NOT dropped: not root)"

    def pfs(self, *args: str) -> None:
        run_quiet(PFS, *args, env=self.env)

    @property
    def client(self) -> RemoteClient:
        assert self._client is not None, "start first"
        return self._client

    @property
    def listed(self) -> Path:
        return self.mnt / "big" / "master" / "d"

    # -- setting up ----------------------------------------------------------------------------

    def start(self) -> None:
        from pfsfuse.api.remote import RemoteClient
        from pfsfuse.home import Home

        self.daemon = start_daemon(self.work, self.home, self.env)
        self._client = RemoteClient(f"unix:{self.home}/pfs.sock", Home(self.home))

    def stop(self) -> None:
        try:
            self.unmount()
        finally:
            if self._client is not None:
                self._client.close()
            stop_daemon(self.daemon)

    def mount(self) -> None:
        self.mnt.mkdir(exist_ok=True)
        self.pfs("mount", str(self.mnt), "--idle", "0.5")

    def unmount(self) -> None:
        if mounted(self.mnt):
            r = subprocess.run([PFS, "unmount", str(self.mnt)], env=self.env, capture_output=True, timeout=600)
            if r.returncode != 0 and mounted(self.mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)

    def mount_pid(self) -> int:
        """The mount's process, from the pid file it leaves beside its state (pid, mountpoint)."""
        for pidfile in (self.home / "mounts").glob("*.pid"):
            lines = pidfile.read_text().splitlines()
            if len(lines) > 1 and lines[1] == str(self.mnt):
                return int(lines[0])
        raise RuntimeError(f"no pid file for the mount at {self.mnt}")

    def note_memory(self, what: str) -> str:
        """The daemon's and the mount's memory now, remembered in the peaks, as a line for stderr."""
        assert self.daemon is not None
        parts = []
        for name, pid in (("daemon", self.daemon.pid), ("mount", self.mount_pid() if mounted(self.mnt) else None)):
            if pid is None:
                continue
            rss, hwm = memory(pid)
            self.peaks[name] = max(self.peaks[name], hwm)
            parts.append(f"{name} {rss / 2**20:.0f} MiB (peak {hwm / 2**20:.0f})")
        line = f"memory after {what}: " + ", ".join(parts)
        print(line, file=sys.stderr, flush=True)
        return line

    # -- the figures ---------------------------------------------------------------------------

    def build(self) -> list[Figure]:
        t = timed(lambda: make_source(self.src, self.n))
        print(f"note: the local tree of {self.n:,} files is ready ({t:.0f} s)", file=sys.stderr, flush=True)
        self.pfs("create-repo", "big")
        t = timed(lambda: self.pfs("put-file", "big", "master", "d", "-r", "-f", str(self.src)))
        # What the reads below cost, not what storing the tree did: a fresh daemon.
        self.stop()
        self.start()
        return [Figure(f"put-file -r of {self.n:,} files (files/s)", self.n / t, None, "files/s", "-", True)]

    def _cold(self, which: str) -> None:
        if which == "pfs":
            self.unmount()
            drop_caches()
            self.mount()
        else:
            drop_caches()

    def _turns(self, cmd: Callable[[Path], list[str]], what: str) -> dict[str, list[float]]:
        """`runs` cold runs of `cmd(dir)` on the mount and the disk, taking turns; the memory after
        each run on the mount."""
        times: dict[str, list[float]] = {"pfs": [], "disk": []}
        for _ in range(self.runs):
            for which, done in times.items():
                self._cold(which)
                path = self.listed if which == "pfs" else self.src
                done.append(timed(functools.partial(run_quiet, *cmd(path))))
                if which == "pfs":
                    self.note_memory(what)
        return times

    def _vs_disk(self, name: str, times: dict[str, list[float]]) -> list[Figure]:
        ours, disk = statistics.median(times["pfs"]), statistics.median(times["disk"])
        spread = f"[{min(times['pfs']):.2f}-{max(times['pfs']):.2f}]"
        return [
            TimeFigure(
                f"{name} of {self.n:,} entries, cold (s) {spread} vs disk{self.cold_note}",
                ours,
                disk,
                "s",
                "<= 2x time",
                ours <= 2 * disk,
            )
        ]

    def find(self) -> list[Figure]:
        figures = self._vs_disk("find", self._turns(lambda p: ["find", str(p)], "find"))
        # Once more on the same mount, warm: what the kernel's and the mount's caches keep.
        warm = [timed(lambda: run_quiet("find", str(self.listed))) for _ in range(self.runs)]
        disk = [timed(lambda: run_quiet("find", str(self.src))) for _ in range(self.runs)]
        self.note_memory("warm finds")
        figures.append(
            TimeFigure(
                f"find of {self.n:,} entries, warm (s) vs disk",
                statistics.median(warm),
                statistics.median(disk),
                "s",
                "<= 2x time",
                statistics.median(warm) <= 2 * statistics.median(disk),
            )
        )
        return figures

    def find_stat(self) -> list[Figure]:
        # A stat of each entry, as -size, -newer or -printf %s need: under a branch, whose
        # entries the kernel keeps for half a second only, each is a LOOKUP once find gets to it.
        return self._vs_disk(
            "find -printf %s", self._turns(lambda p: ["find", str(p), "-printf", r"%s\n"], "find -printf %s")
        )

    def ls_l(self) -> list[Figure]:
        return self._vs_disk("ls -l", self._turns(lambda p: ["ls", "-l", "--color=never", str(p)], "ls -l"))

    def ls_f(self) -> list[Figure]:
        return self._vs_disk("ls -f", self._turns(lambda p: ["ls", "-f", str(p)], "ls -f"))

    def list_file(self) -> list[Figure]:
        def listing(args: list[str]) -> tuple[float, float]:
            first, total, lines = first_and_all(args, self.env)
            if lines < self.n:
                raise RuntimeError(f"{' '.join(args)} printed {lines} lines, not {self.n}")
            return first, total

        ours, ls = [], []
        for _ in range(self.runs):
            ours.append(listing([PFS, "list-file", "big", "master", "d"]))
            ls.append(listing(["ls", "-f", str(self.src)]))
        self.note_memory("list-file")
        # The CLI's start-up for scale (not subtracted: the two medians come from different runs,
        # and a user waits for both).
        start = statistics.median(timed(lambda: self.pfs("version")) for _ in range(self.runs))
        first = statistics.median(f for f, _ in ours)
        return [
            Figure(
                f"list-file of {self.n:,} entries: first line, ms from the start (`version`: {start * 1000:.0f} ms)",
                first * 1000,
                None,
                "ms",
                "<= 100 ms",
                first <= 0.1,
            ),
            Figure(
                "  all of it (entries/s) vs ls -f on the disk",
                self.n / statistics.median(a for _, a in ours),
                self.n / statistics.median(a for _, a in ls),
                "entries/s",
                "-",
                True,
            ),
        ]

    def glob(self) -> list[Figure]:
        prefix = f"d/f{self.n // 2 // 10:06d}*"  # the 10 names f0500000..f0500009 at 1,000,000
        scan = f"d/*{self.n // 2 // 10 % 100_000:05d}?"  # as many names, no literal prefix
        found = self.client.glob_file("big", "master", prefix)
        if len(found) != 10:
            raise RuntimeError(f"the glob {prefix} matched {len(found)} files, not 10")
        runs = max(self.runs, 10)
        t_seek = statistics.median(timed(lambda: self.client.glob_file("big", "master", prefix)) for _ in range(runs))
        t_scan = statistics.median(
            timed(lambda: self.client.glob_file("big", "master", scan)) for _ in range(self.runs)
        )
        t_cli = statistics.median(timed(lambda: self.pfs("glob-file", "big", "master", prefix)) for _ in range(runs))
        self.note_memory("globs")
        return [
            TimeFigure(
                f"glob of 10 under a prefix in {self.n:,} (ms) vs one that scans",
                t_seek * 1000,
                t_scan * 1000,
                "ms",
                "<= 20 ms",
                t_seek <= 0.02,
            ),
            Figure("  the same through the CLI (ms)", t_cli * 1000, None, "ms", "-", True),
        ]

    def memory(self) -> list[Figure]:
        self.note_memory("everything")
        return [
            Figure(
                f"peak memory of the {name} while reading {self.n:,} entries (MiB)",
                peak / 2**20,
                None,
                "MiB",
                "<= 256 MiB",
                peak <= MEMORY_GOAL,
            )
            for name, peak in self.peaks.items()
        ]


SECTIONS = ["build", "find", "find_stat", "ls_l", "ls_f", "list_file", "glob", "memory"]


def run(
    runs: int,
    workdir: str | None,
    report: Callable[[Figure], None],
    sections: list[str] | None = None,
    entries: int = 100_000,
) -> list[Figure]:
    """The sections chosen; `build` always runs first, since the others read what it stores."""
    chosen = ["build", *[s for s in sections or SECTIONS if s != "build"]]
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-bigdir-", dir=workdir or "/tmp"))
    return run_sections(BigDirBench(base, runs, entries), chosen, base, report)
