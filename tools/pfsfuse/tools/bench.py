"""`pfs bench`: our code and a reference run side by side on this machine, medians and ratios.

Each figure is the median of several runs; the ratio is ours over the reference, oriented so that
higher is better (throughput over throughput, or reference time over our time).
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from pfsfuse.api.types import Put
from pfsfuse.home import Home

PFS = str(Path(sys.executable).parent / "pfs")
MiB = 1 << 20


@dataclass
class Figure:
    name: str
    ours: float
    reference: float | None
    unit: str
    goal: str
    ok: bool

    @property
    def ratio(self) -> str:
        return "" if self.reference is None else ratio(self.ours, self.reference)

    def row(self) -> str:
        """The figure as a line of the table under HEADER."""
        ref = "" if self.reference is None else _number(self.reference)
        ok = "yes" if self.ok else "NO"
        return f"{self.name:72} {_number(self.ours):>12} {ref:>12} {self.ratio:>6}  {self.goal:<14} {ok}"


HEADER = f"{'BENCHMARK':72} {'OURS':>12} {'REFERENCE':>12} {'RATIO':>6}  {'GOAL':<14} OK"


def ratio(a: float, b: float) -> str:
    r = a / b
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def _number(x: float) -> str:
    """Three significant digits for small figures (a 0.004 s append is not "0.0")."""
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


def median(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def timed(fn: Callable[[], object], sync: bool = False) -> float:
    """Seconds `fn` takes; with `sync`, until what it wrote is on the disk too."""
    t = time.perf_counter()
    fn()
    if sync:
        os.sync()
    return time.perf_counter() - t


def drop_caches() -> None:
    """Empty the page cache (root only) so that reads come from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def start_daemon(work: Path, home: Path, env: dict, *args: str) -> subprocess.Popen:
    """`pfs serve [ARGS]` for `home`, once it answers; its log in `work`."""
    home.mkdir(parents=True, exist_ok=True)
    with open(work / "daemon.log", "ab") as log:
        daemon = subprocess.Popen([PFS, "serve", *args], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while subprocess.run([PFS, "version"], env=env, capture_output=True).returncode:
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start; see {work / 'daemon.log'}")
        time.sleep(0.05)
    return daemon


def stop_daemon(daemon: subprocess.Popen | None, timeout: float = 120) -> None:
    """End a daemon `start_daemon` started, killing it if it does not stop within `timeout`."""
    if daemon is None or daemon.poll() is not None:
        return
    daemon.terminate()
    try:
        daemon.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def first_and_all(args: list[str], env: dict) -> tuple[float, float, int]:
    """Seconds until `args` printed its first line, until it ended, and the lines it printed."""
    t = time.perf_counter()
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE)
    assert p.stdout is not None
    lines = 1 if p.stdout.readline() else 0
    first = time.perf_counter() - t
    lines += sum(1 for _ in p.stdout)
    if p.wait() != 0:
        raise RuntimeError(f"{' '.join(args)} exited {p.returncode}")
    return first, time.perf_counter() - t, lines


def run_sections(bench, sections: list[str], base: Path, report: Callable[[Figure], None]) -> list[Figure]:
    """Start `bench`, report the figures of each section (a method's name), stop, clean up."""
    figures = []
    try:
        bench.start()
        for name in sections:
            for fig in getattr(bench, name)():
                report(fig)
                figures.append(fig)
    finally:
        try:
            bench.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return figures


class Bench:
    def __init__(self, workdir: Path, runs: int):
        self.work = workdir
        self.runs = runs
        self.home = workdir / "home"
        self.env = {**os.environ, "PFS_HOME": str(self.home), "PFS_ADDRESS": f"unix:{self.home}/pfs.sock"}
        self.daemon: subprocess.Popen | None = None
        self.big = 0  # 1 GiB files put in repo `big`, as f1.bin, f2.bin...

    def pfs(self, *args: str, stdout=subprocess.DEVNULL) -> None:
        subprocess.run([PFS, *args], env=self.env, check=True, stdout=stdout)

    def start(self) -> None:
        self.daemon = start_daemon(self.work, self.home, self.env)

    def stop(self) -> None:
        stop_daemon(self.daemon, timeout=30)
        self.daemon = None

    # -- the store benchmarks of the foundation issue -------------------------------------------

    def _source(self) -> Path:
        """The 1 GiB random file, filled afresh (so that nothing dedups against a previous run)."""
        src = self.work / "random-1g.bin"
        with open(src, "wb") as f:
            for _ in range(1024):
                f.write(os.urandom(MiB))
        os.sync()
        return src

    def _put_big(self) -> float:
        """Seconds to put a fresh 1 GiB file as the repo's newest `f<n>.bin`."""
        if self.big == 0:
            self.pfs("create-repo", "big")
        src = self._source()
        self.big += 1
        return timed(lambda: self.pfs("put-file", "big", "master", f"f{self.big}.bin", "-f", str(src)), sync=True)

    def put_big_file(self) -> list[Figure]:
        src = self._source()

        def cp_sync() -> float:
            dst = self.work / "copy.bin"
            t = timed(lambda: shutil.copyfile(src, dst), sync=True)
            dst.unlink()
            return t

        t_cp = median(cp_sync, self.runs)
        t_put = statistics.median(self._put_big() for _ in range(self.runs))
        return [
            Figure(
                "put-file 1 GiB random (MiB/s) vs cp+sync",
                1024 / t_put,
                1024 / t_cp,
                "MiB/s",
                ">= 0.5",
                t_cp / t_put >= 0.5,
            )
        ]

    def _get_big(self, cold: bool) -> list[Figure]:
        if self.big == 0:  # run alone: put a file to read
            self._put_big()
        src = self.work / "random-1g.bin"  # the content of the newest f<n>.bin

        def cat() -> float:
            if cold:
                drop_caches()
            return timed(lambda: subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True))

        def get() -> float:
            if cold:
                drop_caches()
            return timed(lambda: self.pfs("get-file", "big", "master", f"f{self.big}.bin"))

        cat(), get()  # warm-up (and fill the cache for the warm case)
        # Taking turns: this disk's speed drifts from minute to minute.
        pairs = [(cat(), get()) for _ in range(self.runs)]
        t_cat = statistics.median(c for c, _ in pairs)
        t_get = statistics.median(g for _, g in pairs)
        if not cold:  # no goal: from the page cache, cat is a memcpy and get-file hashes each chunk
            return [Figure("get-file 1 GiB warm (MiB/s) vs cat", 1024 / t_get, 1024 / t_cat, "MiB/s", "-", True)]
        return [
            Figure(
                "get-file 1 GiB cold (MiB/s) vs cat",
                1024 / t_get,
                1024 / t_cat,
                "MiB/s",
                ">= 0.7",
                t_cat / t_get >= 0.7,
            )
        ]

    def get_big_file(self) -> list[Figure]:
        return self._get_big(cold=False)

    def get_big_file_cold(self) -> list[Figure]:
        return self._get_big(cold=True)

    def dedup(self) -> list[Figure]:
        from pfsfuse.store import Store  # in-process: we read the store's own accounting

        self.stop()
        store = Store(Home(self.home))
        try:
            data = bytearray(os.urandom(1024 * MiB))
            store.create_repo("dedup")
            store.write_files("dedup", "master", [Put("a.bin", stream=io.BytesIO(data))])
            again = store.write_files("dedup", "master", [Put("b.bin", stream=io.BytesIO(data))])
            before = {c.hash for c, _ in store.read_plan("dedup", "master", "a.bin").chunks}
            data[512 * MiB : 512 * MiB + 1024] = os.urandom(1024)
            store.write_files("dedup", "master", [Put("a.bin", stream=io.BytesIO(data))])
            after = {c.hash for c, _ in store.read_plan("dedup", "master", "a.bin").chunks}
        finally:
            store.close()
            self.start()
        new = len(after - before)
        return [
            Figure("re-put the same 1 GiB: new chunk bytes", again.stored, None, "B", "== 0", again.stored == 0),
            Figure("change 1 KiB in its middle: new chunks", new, None, "chunks", "<= 2", new <= 2),
        ]

    def many_small_files(self) -> list[Figure]:
        src = self.work / "small"
        src.mkdir()
        for i in range(10_000):
            (src / f"{i // 1000:02d}").mkdir(exist_ok=True)
            (src / f"{i // 1000:02d}" / f"f{i:05d}").write_bytes(os.urandom(4096))
        self.pfs("create-repo", "small")
        n = 0

        def put() -> float:
            nonlocal n
            n += 1
            return timed(lambda: self.pfs("put-file", "small", "master", f"run{n}", "-r", "-f", str(src)))

        def cp() -> float:
            dst = self.work / "small-copy"
            t = timed(lambda: shutil.copytree(src, dst), sync=True)
            shutil.rmtree(dst)
            return t

        t_put = median(put, self.runs)
        t_cp = median(cp, self.runs)
        rate = 10_000 / t_put
        return [
            Figure(
                "put-file -r 10,000 x 4 KiB (files/s) vs cp -r+sync",
                rate,
                10_000 / t_cp,
                "files/s",
                ">= 3000 files/s",
                rate >= 3000,
            )
        ]

    def huge_directory(self) -> list[Figure]:
        from pfsfuse.store import Store

        self.stop()
        store = Store(Home(self.home))
        try:
            store.create_repo("huge")
            store.start_commit("huge", "master")
            batch = 100_000
            for start in range(0, 1_000_000, batch):
                store.write_files(
                    "huge",
                    "master",
                    (Put(f"d/f{i:07d}", stream=io.BytesIO(b"%d" % i)) for i in range(start, start + batch)),
                )
            store.finish_commit("huge", "master")
            written = []
            original = store.db.write

            def counting(batch_, sync=True):
                written.append(batch_.size_in_bytes())
                original(batch_, sync)

            times, sizes = [], []
            with mock.patch.object(store.db, "write", counting):
                for i in range(max(self.runs, 5)):
                    written.clear()
                    ops = [Put(f"d/new{i}", stream=io.BytesIO(b"x"))]
                    times.append(timed(functools.partial(store.write_files, "huge", "master", ops)))
                    sizes.append(sum(written))
        finally:
            store.close()
            self.start()
        t, size = statistics.median(times), statistics.median(sizes)
        return [
            Figure("add 1 file to a 1,000,000-file dir + finish (ms)", t * 1000, None, "ms", "<= 50 ms", t <= 0.05),
            Figure("  index data written for it (KiB)", size / 1024, None, "KiB", "<= 64 KiB", size <= 64 * 1024),
        ]

    def huge_listing(self) -> list[Figure]:
        """list-file of a 200,000-entry directory: its first line, and the whole listing, against
        `ls -f` of a disk directory of as many files; a glob of 11 under a prefix in it, against
        a glob that must list it all."""
        from pfsfuse.store import Store

        n = 200_000
        self.stop()
        store = Store(Home(self.home))
        try:
            store.create_repo("listing")
            store.write_files("listing", "master", (Put(f"d/f{i:07d}", stream=io.BytesIO(b"")) for i in range(n)))
        finally:
            store.close()
            self.start()
        disk = self.work / "listing"
        disk.mkdir()
        for i in range(n):
            (disk / f"f{i:07d}").touch()

        ours = [first_and_all([PFS, "list-file", "listing", "master", "d"], self.env)[:2] for _ in range(self.runs)]
        ls = [first_and_all(["ls", "-f", str(disk)], self.env)[:2] for _ in range(self.runs)]
        shutil.rmtree(disk)
        glob = "listing", "master", "d/f012345*"
        t_prefix = median(lambda: timed(lambda: self.pfs("glob-file", *glob)), self.runs)
        t_scan = median(lambda: timed(lambda: self.pfs("glob-file", "listing", "master", "d/*12345?")), self.runs)
        first = statistics.median(f for f, _ in ours)
        # The first line's time includes the CLI's start-up: `pfs version` shows that alone.
        start = median(lambda: timed(lambda: self.pfs("version")), self.runs)
        return [
            Figure(
                f"list-file of 200,000 entries: first line, ms after start-up ({start * 1000:.0f} ms)",
                (first - start) * 1000,
                None,
                "ms",
                "<= 100 ms",
                first - start <= 0.1,
            ),
            Figure(
                "  all of it (entries/s) vs ls -f of as many files",
                n / statistics.median(a for _, a in ours),
                n / statistics.median(a for _, a in ls),
                "entries/s",
                "-",
                True,
            ),
            Figure(
                "glob-file of 11 under a prefix in it (globs/s) vs a glob listing it all",
                1 / t_prefix,
                1 / t_scan,
                "/s",
                "-",
                True,
            ),
        ]

    # -- split files and garbage collection (issue 5) ---------------------------------------------

    def split_csv(self) -> list[Figure]:
        src = self.work / "data.csv"
        out = self.work / "split-out"
        self.pfs("create-repo", "split")
        ours, ref = [], []
        for run in range(self.runs):
            write_csv(src, 1 << 30, salt=run)  # fresh lines: nothing dedups against a previous run
            out.mkdir()
            ref.append(
                timed(lambda: subprocess.run(["split", "-l", "1000", str(src), f"{out}/"], check=True), sync=True)
            )
            shutil.rmtree(out)
            ours.append(
                timed(
                    functools.partial(
                        self.pfs,
                        "put-file",
                        "split",
                        "master",
                        f"run{run}",
                        "--split",
                        "line",
                        "--target-file-datums",
                        "1000",
                        "-f",
                        str(src),
                    )
                )
            )
        mb = src.stat().st_size / 1e6
        rate = mb / statistics.median(ours)
        return [
            Figure(
                "put-file --split line 1 GiB CSV (MB/s) vs split -l 1000",
                rate,
                mb / statistics.median(ref),
                "MB/s",
                ">= 100 MB/s",
                rate >= 100,
            )
        ]

    def gc_million(self) -> list[Figure]:
        """A store of 1,000,000 chunks (a split file of that many lines), half of them dead and
        interleaved with live ones, so that every pack is rewritten."""
        from pfsfuse.api.types import Delete
        from pfsfuse.store import Store

        self.stop()
        store = Store(Home(self.home))
        try:
            n = 1_000_000
            store.create_repo("gc")
            lines = b"".join(b"%d,%s\n" % (i, os.urandom(16).hex().encode()) for i in range(n))
            first = store.write_files("gc", "master", [Put("records", stream=io.BytesIO(lines), split="line")])
            store.write_files("gc", "master", (Delete(f"records/{i:016x}") for i in range(1, n, 2)))
            store.delete_commit("gc", first.commit)
            t_dry = timed(lambda: store.garbage_collect(dry_run=True))
            results = []
            t_gc = timed(lambda: results.append(store.garbage_collect()))
            t_again = timed(lambda: store.garbage_collect())
        finally:
            store.close()
            self.start()
        freed = results[0]
        return [
            Figure("garbage-collect of 1,000,000 chunks, half dead (s)", t_gc, None, "s", "<= 60 s", t_gc <= 60),
            Figure("  chunks freed", freed.chunks, None, "chunks", "== 500,000", freed.chunks == n // 2),
            Figure("  packs rewritten", freed.packs_rewritten, None, "packs", "", True),
            Figure("  --dry-run of it (s)", t_dry, None, "s", "", True),
            Figure("  again, with nothing to free (s)", t_again, None, "s", "", True),
        ]


def write_csv(path: Path, size: int, salt: int) -> None:
    """A CSV of about `size` bytes in lines of about 107 bytes, all different."""
    emails = [b"user%05d.%d@example.com" % (i, salt) for i in range(4096)]
    with open(path, "wb") as f:
        written, i = 0, 0
        while written < size:
            block = b"".join(
                b"%d,%s,%d.%d.%d.%d,2018-%02d-%02d,some free-form text describing this record %08x\n"
                % (j, emails[j & 4095], j & 255, (j >> 8) & 255, salt & 255, 9, j % 12 + 1, j % 28 + 1, j)
                for j in range(i, i + 10_000)
            )
            f.write(block)
            written += len(block)
            i += 10_000


SUITES = {
    "store": [
        "put_big_file",
        "get_big_file",
        "get_big_file_cold",
        "dedup",
        "many_small_files",
        "huge_directory",
        "huge_listing",
    ],
    "split": ["split_csv"],
    "gc": ["gc_million"],
}


# Suites with a module of their own: pfsfuse.tools.bench_<suite>, with its SECTIONS and run().
MODULES = ["mount", "posix", "objstore", "pipelines", "auth", "direct", "compare", "sdk", "bigdir", "startup"]
# Suites that are one section of another: `pfs bench checkout` is `compare --only checkout`.
ALIASES = {"checkout": ("compare", "checkout")}


def run(
    suite: str,
    runs: int,
    workdir: str | None,
    report: Callable[[Figure], None],
    only: list[str] | None = None,
    entries: int | None = None,
) -> list[Figure]:
    """The suite's sections (methods of its bench, each giving figures), or those named in `only`;
    `entries` sizes the directory of the suites that take it (bigdir)."""
    if suite in ALIASES:
        suite, section = ALIASES[suite]
        only = [section]
    module = importlib.import_module(f"pfsfuse.tools.bench_{suite}") if suite in MODULES else None
    names = module.SECTIONS if module else SUITES[suite]
    for name in only or []:
        if name not in names:
            raise RuntimeError(f"{suite} has no section {name!r}; its sections: {', '.join(names)}")
    chosen = [name for name in names if not only or name in only]
    if module:
        sized = {"entries": entries} if entries is not None else {}
        return module.run(runs, workdir, report, sections=chosen, **sized)
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-", dir=workdir or "/tmp"))
    return run_sections(Bench(base, runs), chosen, base, report)
