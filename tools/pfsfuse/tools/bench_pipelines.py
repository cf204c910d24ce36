"""`pfs bench pipelines`: the scheduler and the local workers against a plain shell loop.

- 1,000 datums of a trivial command (glob `/*` over 1,000 small files, parallelism 2), end to
  end, against the same command run 1,000 times by a shell loop: the per-datum overhead ratio.
- A shuffle: one datum that symlinks 10,000 input files (1 GiB) into /pfs/out: its time, and the
  chunk bytes it wrote (none: the links become references).
- A datum over those 10,000 files whose command reads one of them, with lazy pipes and with the
  FUSE-backed inputs: the bytes fetched, against that file's size.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pfsfuse.tools.bench import PFS, Bench, Figure, MiB, median, run_sections, timed

SMALL = 1000
MANY = 10_000
EACH = 100 * 1024  # 10,000 of them: ~1 GiB


class PipelineBench(Bench):
    def create_pipeline(self, spec: dict) -> None:
        path = self.work / f"{spec['pipeline']['name']}.json"
        path.write_text(json.dumps(spec))
        self.pfs("create-pipeline", "-f", str(path))

    def job(self, pipeline: str) -> dict:
        out = subprocess.run(
            [PFS, "list-job", "-p", pipeline, "--json"], env=self.env, check=True, capture_output=True
        ).stdout
        return json.loads(out)[0]

    def chunk_bytes(self) -> int:
        return sum(f.stat().st_size for f in (self.home / "chunks").rglob("*") if f.is_file())

    def trivial(self) -> list[Figure]:
        src = self.work / "small"
        src.mkdir()
        for i in range(SMALL):
            (src / f"f{i:04d}").write_bytes(b"%d\n" % i)
        self.pfs("create-repo", "small")
        self.pfs("put-file", "small", "master", "in", "-r", "-f", str(src))
        command = 'wc -c "$1" > /dev/null'

        def loop() -> float:
            return timed(
                lambda: subprocess.run(
                    ["sh", "-c", f"for f in {src}/*; do sh -c '{command}' sh \"$f\"; done"], check=True
                )
            )

        def ours(run: int) -> float:
            name = f"trivial{run}"
            self.create_pipeline(
                {
                    "pipeline": {"name": name},
                    "transform": {"cmd": ["sh"], "stdin": [command.replace('"$1"', '"$small"')]},
                    "parallelism_spec": {"constant": 2},
                    "input": {"atom": {"repo": "small", "glob": "/in/*"}},
                }
            )
            t = timed(lambda: self.pfs("flush-commit", "small@master"))
            job = self.job(name)
            if job["state"] != "success" or job.get("processed", 0) != SMALL:
                raise RuntimeError(f"the benchmark job did not process every datum: {job}")
            self.pfs("delete-pipeline", name)
            return t

        runs = iter(range(self.runs))
        t_ours = median(lambda: ours(next(runs)), self.runs)
        t_loop = median(loop, self.runs)
        per_ours, per_loop = t_ours / SMALL * 1000, t_loop / SMALL * 1000
        return [
            Figure(
                f"{SMALL} datums of a trivial command, parallelism 2 (ms per datum) vs a shell loop",
                per_ours,
                per_loop,
                "ms",
                "<= 2x",
                per_ours <= 2 * per_loop,
            )
        ]

    def shuffle_and_lazy(self) -> list[Figure]:
        src = self.work / "raw"
        src.mkdir()
        for i in range(MANY):
            (src / f"f{i:05d}").write_bytes(os.urandom(EACH))
        self.pfs("create-repo", "raw")
        self.pfs("put-file", "raw", "master", "in", "-r", "-f", str(src))
        figures = []

        before = self.chunk_bytes()
        self.create_pipeline(
            {
                "pipeline": {"name": "shuffle"},
                "transform": {"cmd": ["sh"], "stdin": ["cp -s /pfs/raw/in/* /pfs/out/"]},
                "input": {"atom": {"repo": "raw", "glob": "/"}},
            }
        )
        t = timed(lambda: self.pfs("flush-commit", "raw@master"))
        job, written = self.job("shuffle"), self.chunk_bytes() - before
        if job["state"] != "success":
            raise RuntimeError(f"the shuffle job failed: {job}")
        figures.append(
            Figure(f"shuffle: symlink {MANY} files (1 GiB) into /pfs/out (s)", t, None, "s", "<= 10 s", t <= 10)
        )
        figures.append(Figure("shuffle: chunk bytes written", written, None, "B", "0", written == 0))

        for lazy in (True, False):
            name = "lazyone" if lazy else "fuseone"
            self.create_pipeline(
                {
                    "pipeline": {"name": name},
                    "transform": {"cmd": ["sh"], "stdin": ["cat /pfs/raw/in/f04242 > /pfs/out/one"]},
                    "input": {"atom": {"repo": "raw", "glob": "/", "lazy": lazy}},
                }
            )
            self.pfs("flush-commit", "raw@master")
            job = self.job(name)
            if job["state"] != "success":
                raise RuntimeError(f"the {name} job failed: {job}")
            how = "lazy pipes" if lazy else "FUSE inputs"
            figures.append(
                Figure(
                    f"read 1 of {MANY} files, {how}: KiB fetched vs the file + 1 MiB chunk",
                    job.get("downloaded", 0) / 1024,
                    (EACH + MiB) / 1024,
                    "KiB",
                    "<= 1",
                    job.get("downloaded", 0) <= EACH + MiB,
                )
            )
        return figures


SECTIONS = ["trivial", "shuffle_and_lazy"]


def run(
    runs: int, workdir: str | None, report: Callable[[Figure], None], sections: list[str] | None = None
) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="pfs-bench-pipelines-", dir=workdir or "/tmp"))
    return run_sections(PipelineBench(base, runs), sections or SECTIONS, base, report)
