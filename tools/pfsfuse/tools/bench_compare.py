"""`pfs bench compare`: what a team moving from git or DVC measures, on the same data, side by side.

The data is a tree of 10,000 files of 4 KiB in 100 directories. Each workload runs through pfsfuse
(the `pfs` CLI against a daemon), git and DVC, each tool that is installed: git from the system,
DVC from PyPI (`pip install dvc`, in any virtual environment: set PFS_BENCH_DVC to its `dvc` when it
is not on PATH). Neither is a dependency of pfsfuse.

- version: store the tree as a new version (`put-file -r`; `git add -A` + `git commit`; `dvc add`
  + `git commit` of its .dvc file);
- change: rewrite 1% of the files and store the new version;
- checkout: bring the first version back into an empty directory (`get-file -r` of the old
  commit; `git checkout OLD -- data`; `git checkout OLD data.dvc` + `dvc checkout`);
- mount: the same through a fresh mount, `cp -r MNT/REPO/master^/data` (against the same git and
  DVC checkouts, and `cp -r` of the tree from the disk).

`pfs bench compare --only big_file`: one file of 1 GiB of random bytes, versioned, deleted and
brought back (`get-file -o` against `dvc checkout`, and `cp` of the same file on the disk), each
read cold (the page cache dropped, as root) and written to the disk (`sync`) before the clock
stops: pfsfuse writes its packs past the page cache, DVC its cache through it.

Each row is one workload against one reference: our median and the reference's in files/s, the
ratio (ours over theirs: above 1 we are faster), and both ranges in seconds.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pfsfuse.tools.bench import Bench, Figure, drop_caches, run_sections, timed

FILES = 10_000
SIZE = 4096
CHANGED = FILES // 100


def _dvc() -> str | None:
    return os.environ.get("PFS_BENCH_DVC") or shutil.which("dvc")


def _run(args: list[str], cwd: Path, env: dict | None = None) -> None:
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _spread(times: list[float]) -> str:
    return f"{min(times):.2f}-{max(times):.2f} s"


class CompareBench(Bench):
    def __init__(self, workdir: Path, runs: int):
        super().__init__(workdir, runs)
        self.src = workdir / "data"
        self.repos = 0
        self.git_env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@localhost",
            # No background `git gc --auto` (10,000 loose objects start one) or DVC analytics
            # process: they would run into the next measurement, and delete files under the
            # scratch directory while it is being removed.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "gc.auto",
            "GIT_CONFIG_VALUE_0": "0",
            "DVC_NO_ANALYTICS": "1",
        }

    def _tree(self) -> None:
        if self.src.exists():
            return
        for i in range(FILES):
            d = self.src / f"d{i % 100:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}").write_bytes(os.urandom(SIZE))
        os.sync()

    def _change(self, tree: Path, salt: int) -> None:
        for i in range(0, FILES, FILES // CHANGED):
            (tree / f"d{i % 100:02d}" / f"f{i:05d}").write_bytes(os.urandom(SIZE - salt % 7))

    # -- one run of the three workloads, per tool: {workload: seconds}

    def _pfs_run(self) -> dict[str, float]:
        self.repos += 1
        repo, tree = f"cmp{self.repos}", self.work / f"pfs-tree{self.repos}"
        shutil.copytree(self.src, tree)
        self.pfs("create-repo", repo)
        out: dict[str, float] = {}
        out["version"] = timed(lambda: self.pfs("put-file", repo, "master", "data", "-r", "-f", str(tree)))
        self._change(tree, self.repos)
        out["change"] = timed(lambda: self.pfs("put-file", repo, "master", "data", "-r", "-f", str(tree)))
        dest = self.work / f"pfs-out{self.repos}"
        out["checkout"] = timed(lambda: self.pfs("get-file", repo, "master^", "data", "-r", "-o", str(dest)))
        if subprocess.run(["diff", "-rq", str(self.src), str(dest)], capture_output=True).returncode:
            raise RuntimeError("get-file -r of the first version differs from it")
        shutil.rmtree(dest)
        out["mount"] = self._mount_copy(repo, dest)
        shutil.rmtree(dest)
        out["disk"] = timed(lambda: _run(["cp", "-r", str(self.src), str(dest)], self.work))
        shutil.rmtree(tree)
        shutil.rmtree(dest)
        self.pfs("delete-repo", repo)
        return out

    def _mount_copy(self, repo: str, dest: Path) -> float:
        """`cp -r` of the first version out of a fresh mount (its caches empty)."""
        mnt = self.work / "mnt"
        mnt.mkdir(exist_ok=True)
        self.pfs("mount", str(mnt))
        try:
            took = timed(lambda: _run(["cp", "-r", str(mnt / repo / "master^" / "data"), str(dest)], self.work))
        finally:
            self.pfs("unmount", str(mnt))
        if subprocess.run(["diff", "-rq", str(self.src), str(dest)], capture_output=True).returncode:
            raise RuntimeError("cp -r of the first version out of the mount differs from it")
        return took

    def _git_run(self, dvc: str | None) -> dict[str, float]:
        self.repos += 1
        top = self.work / f"{'dvc' if dvc else 'git'}{self.repos}"
        top.mkdir()
        env = self.git_env
        _run(["git", "init", "-q"], top, env)
        if dvc:
            _run([dvc, "init", "-q"], top, env)
            _run([dvc, "config", "core.autostage", "true"], top, env)
            _run(["git", "commit", "-qm", "dvc init"], top, env)
        shutil.copytree(self.src, top / "data")
        os.sync()

        def version(message: str) -> None:
            if dvc:
                _run([dvc, "add", "-q", "data"], top, env)
            else:
                _run(["git", "add", "-A", "data"], top, env)
            _run(["git", "commit", "-qm", message], top, env)

        out: dict[str, float] = {}
        out["version"] = timed(lambda: version("first"))
        self._change(top / "data", self.repos)
        out["change"] = timed(lambda: version("second"))
        shutil.rmtree(top / "data")

        def checkout() -> None:
            if dvc:
                _run(["git", "checkout", "-q", "HEAD^", "--", "data.dvc"], top, env)
                _run([dvc, "checkout", "-q"], top, env)
            else:
                _run(["git", "checkout", "-q", "HEAD^", "--", "data"], top, env)

        out["checkout"] = out["mount"] = timed(checkout)
        if subprocess.run(["diff", "-rq", str(self.src), str(top / "data")], capture_output=True).returncode:
            raise RuntimeError(f"the {'dvc' if dvc else 'git'} checkout differs from the first version")
        shutil.rmtree(top)
        return out

    # -- the table

    def _rows(self, workloads: list[str]) -> list[Figure]:
        self._tree()
        tools: dict[str, Callable[[], dict[str, float]]] = {"pfsfuse": self._pfs_run}
        if shutil.which("git"):
            tools["git"] = lambda: self._git_run(None)
            dvc = _dvc()
            if dvc:
                tools["dvc"] = lambda: self._git_run(dvc)
        # Taking turns, run by run: the machine's speed drifts from minute to minute.
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
        for _ in range(self.runs):
            for name, fn in tools.items():
                runs[name].append(fn())
        figures = []
        for w in workloads:
            ours = [r[w] for r in runs["pfsfuse"]]
            for name in tools:
                if name == "pfsfuse":
                    continue
                theirs = [r[w] for r in runs[name]]
                t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
                figures.append(
                    Figure(
                        f"{_LABELS.get(w, w)} {FILES:,} x 4 KiB vs {name} (files/s; ours {_spread(ours)}, "
                        f"{name} {_spread(theirs)})",
                        (FILES if w != "change" else CHANGED) / t_ours,
                        (FILES if w != "change" else CHANGED) / t_theirs,
                        "files/s",
                        ">= 1" if w in ("checkout", "mount") else "-",
                        t_theirs / t_ours >= 1 if w in ("checkout", "mount") else True,
                    )
                )
            if w == "mount":  # and the same copy from the disk
                disk = [r["disk"] for r in runs["pfsfuse"]]
                figures.append(
                    Figure(
                        f"{_LABELS[w]} {FILES:,} x 4 KiB vs cp -r on the disk (files/s; ours {_spread(ours)}, "
                        f"disk {_spread(disk)})",
                        FILES / statistics.median(ours),
                        FILES / statistics.median(disk),
                        "files/s",
                        "-",
                        True,
                    )
                )
            if len(tools) == 1:
                figures.append(
                    Figure(
                        f"{w} {FILES:,} x 4 KiB (no git or dvc here)",
                        FILES / statistics.median(ours),
                        None,
                        "files/s",
                        "-",
                        True,
                    )
                )
        return figures

    def all(self) -> list[Figure]:
        return self._rows(["version", "change", "checkout", "mount"])

    def checkout(self) -> list[Figure]:
        return self._rows(["checkout", "mount"])

    def big_file(self) -> list[Figure]:
        src = self.work / "big.bin"
        with open(src, "wb") as f:
            for _ in range(1024):
                f.write(os.urandom(1 << 20))
        self.pfs("create-repo", "big")
        self.pfs("put-file", "big", "master", "big.bin", "-f", str(src))
        top = self.work / "dvc-big"
        dvc = _dvc()
        if dvc:
            top.mkdir()
            for args in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.autostage", "true"]):
                _run(args, top, self.git_env)
            shutil.copy(src, top / "big.bin")
            _run([dvc, "add", "-q", "big.bin"], top, self.git_env)
            _run(["git", "commit", "-qm", "big"], top, self.git_env)
        out = self.work / "out.bin"
        times: dict[str, list[float]] = {"pfsfuse": [], "dvc": [], "cp": []}
        for _ in range(self.runs):  # taking turns
            out.unlink(missing_ok=True)
            drop_caches()
            times["pfsfuse"].append(
                timed(lambda: self.pfs("get-file", "big", "master", "big.bin", "-o", str(out)), sync=True)
            )
            if subprocess.run(["cmp", "-s", str(src), str(out)]).returncode:
                raise RuntimeError("get-file of the big file differs from it")
            out.unlink()
            drop_caches()
            times["cp"].append(timed(lambda: _run(["cp", str(src), str(out)], self.work), sync=True))
            if dvc:
                (top / "big.bin").unlink()
                drop_caches()
                times["dvc"].append(timed(lambda: _run([dvc, "checkout", "-q"], top, self.git_env), sync=True))
        ours = times["pfsfuse"]
        figures = []
        for name, theirs in times.items():
            if name == "pfsfuse" or not theirs:
                continue
            t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
            figures.append(
                Figure(
                    f"get-file of 1 GiB vs {'dvc checkout' if name == 'dvc' else 'cp on the disk'} "
                    f"(MiB/s; ours {_spread(ours)}, {name} {_spread(theirs)})",
                    1024 / t_ours,
                    1024 / t_theirs,
                    "MiB/s",
                    ">= 1" if name == "dvc" else "-",
                    t_theirs / t_ours >= 1 if name == "dvc" else True,
                )
            )
        return figures


_LABELS = {"mount": "cp -r out of a mount of"}  # (against the same checkouts)

SECTIONS = ["all", "checkout", "big_file"]


def run(
    runs: int, workdir: str | None, report: Callable[[Figure], None], sections: list[str] | None = None
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-compare-", dir=workdir or "/tmp"))
    # "all" already has the checkout rows: run one of the two.
    chosen = ["all"] if not sections or "all" in sections else [s for s in SECTIONS if s in sections]
    return run_sections(CompareBench(base, runs), chosen, base, report)
