"""`pfs bench startup`: how long the common read-only verbs take from start to exit.

A scratch daemon holds a small repo (a few files, two commits). Each command is run as a user runs
it, a new process each time, in interleaved rounds (so that the machine's drift touches all alike):
the bare interpreter (`python3 -c pass`, the interpreter `pfs` runs on), `git status` in a small
work tree, each verb of the light path (tools/cli/lite.py), and `list-repo` through the click CLI
for comparison. At least 11 rounds (`--runs` if more); medians and ranges in ms.

Here the ratio is a command's median over the bare interpreter's: how many bare starts it costs
(lower is better; goal: within 3x).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pfsfuse.tools.bench import PFS, Figure, run_sections, start_daemon, stop_daemon

SECTIONS = ["verbs"]
GOAL = 3.0
_FULL = "import sys; from pfsfuse.tools.cli.group import cli; cli(sys.argv[1:], prog_name='pfs')"


class StartupBench:
    def __init__(self, work: Path, runs: int):
        self.work, self.runs = work, max(runs, 11)
        self.home = work / "home"
        self.env = {**os.environ, "PFS_HOME": str(self.home), "PFS_ADDRESS": f"unix:{self.home}/pfs.sock"}
        self.tree = work / "tree"
        self.daemon: subprocess.Popen | None = None

    def _pfs(self, *args: str, input: bytes | None = None) -> None:
        subprocess.run([PFS, *args], env=self.env, input=input, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self.daemon = start_daemon(self.work, self.home, self.env)
        self.tree.mkdir()
        for i in range(20):
            (self.tree / f"f{i:02d}.txt").write_bytes(b"line %d\n" % i * 100)
        self._pfs("create-repo", "bench")
        self._pfs("put-file", "bench", "master", "-r", "-f", str(self.tree), "tree")
        self._pfs("put-file", "bench", "master", "small.txt", input=b"hello\n")
        git = ["git", "-C", str(self.tree), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], check=True)

    def stop(self) -> None:
        stop_daemon(self.daemon, timeout=30)
        self.daemon = None

    def _commands(self) -> dict[str, list[str]]:
        light = [
            ["list-repo"],
            ["inspect-repo", "bench"],
            ["list-branch", "bench"],
            ["list-commit", "bench"],
            ["inspect-commit", "bench", "master"],
            ["list-file", "bench", "master", "tree"],
            ["inspect-file", "bench", "master", "small.txt"],
            ["get-file", "bench", "master", "small.txt"],
            ["list-pipeline"],
            ["list-job"],
            ["version"],
        ]
        commands = {"python3 -c pass": [sys.executable, "-c", "pass"], "git status": ["git", "status", "--short"]}
        commands.update({f"pfs {' '.join(args)}": [PFS, *args] for args in light})
        commands["pfs list-repo, click CLI"] = [sys.executable, "-c", _FULL, "list-repo"]
        return commands

    def _time(self, argv: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(argv, env=self.env, cwd=self.tree, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    def verbs(self) -> list[Figure]:
        commands = self._commands()
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # a first run of each, not counted: caches warm
            self._time(argv)
        for _ in range(self.runs):
            for name, argv in commands.items():
                times[name].append(self._time(argv) * 1000)
        bare = statistics.median(times["python3 -c pass"])
        figures = []
        for name, ms in times.items():
            median = statistics.median(ms)
            label = f"{name}: ms, median of {len(ms)} ({min(ms):.0f}-{max(ms):.0f})"
            light = name.startswith("pfs ") and not name.endswith("click CLI")
            goal, ok = (f"<= {GOAL:.2f}", median / bare <= GOAL) if light else ("(reference)", True)
            figures.append(Figure(label, median, bare, "ms", goal, ok))
        return figures


def run(runs: int, workdir: str | None, report: Callable[[Figure], None], sections: list[str]) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-startup-", dir=workdir or "/tmp"))
    os.chmod(base, 0o700)
    return run_sections(StartupBench(base, runs), sections, base, report)
