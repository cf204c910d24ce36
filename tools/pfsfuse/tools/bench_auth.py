"""`pfs bench auth`: what checking a token and an ACL on every request costs.

Two daemons on this machine, one with auth activated (the CLI sends its token, the daemon checks
it and the repo's ACL on each request) and one without; the same commands, run alternately:

- `pfs put-file -r` of a directory of 10,000 small files into a new repo;
- `pfs list-file` of that directory.

The reference is the daemon without auth; the ratio is its time over ours (goal: within 5%).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pfsfuse.tools.bench import PFS, Bench, Figure, run_sections, timed

FILES = 10_000
SECTIONS = ["put_many", "list_many"]


class AuthBench:
    def __init__(self, work: Path, runs: int):
        self.work, self.runs = work, runs
        (work / "off").mkdir()
        (work / "on").mkdir()
        self.off, self.on = Bench(work / "off", runs), Bench(work / "on", runs)
        self.src = work / "src"
        self.repos = 0

    def start(self) -> None:
        self.src.mkdir()
        for i in range(FILES):
            (self.src / f"f{i:05d}").write_bytes(b"%d\n" % i)
        self.off.start()
        self.on.start()
        # Activating logs the client of that home in: its commands send the admin's token. An
        # admin's request is checked as any other's, then passes every ACL.
        subprocess.run(
            [PFS, "auth", "activate", "--admins=bench"], env=self.on.env, check=True, stdout=subprocess.DEVNULL
        )
        self._put(self.on)  # a first repo each for list_many, and a warm daemon
        self._put(self.off)

    def stop(self) -> None:
        self.off.stop()
        self.on.stop()

    def _put(self, bench: Bench) -> float:
        self.repos += 1
        repo = f"r{self.repos}"
        bench.pfs("create-repo", repo)
        return timed(lambda: bench.pfs("put-file", repo, "master", "in", "-r", "-f", str(self.src)))

    def _side_by_side(self, name: str, fn: Callable[[Bench], float]) -> list[Figure]:
        off, on = [], []
        for _ in range(self.runs):  # alternately: the machine's drift touches both alike
            off.append(fn(self.off))
            on.append(fn(self.on))
        ours, ref = statistics.median(on), statistics.median(off)
        return [Figure(f"{name} with auth (s) vs without", ours, ref, "s", ">= 0.95", ref / ours >= 0.95)]

    def put_many(self) -> list[Figure]:
        return self._side_by_side(f"put-file -r, {FILES:,} files", self._put)

    def list_many(self) -> list[Figure]:
        return self._side_by_side(
            f"list-file of {FILES:,} files",
            lambda b: timed(lambda: b.pfs("list-file", "r1" if b is self.on else "r2", "master", "in")),
        )


def run(runs: int, workdir: str | None, report: Callable[[Figure], None], sections: list[str]) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-auth-", dir=workdir or "/tmp"))
    os.chmod(base, 0o700)
    return run_sections(AuthBench(base, runs), sections, base, report)
