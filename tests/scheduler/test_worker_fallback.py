"""A worker that cannot give /pfs a private view fails its datums saying why, instead of running
the command over an empty /pfs. Here the daemon runs in a real chroot (a plain directory holding
binds of the host's), where / is not a mount point; the copy mode without FUSE is exercised by
test_incremental's "copy" runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PFS, Daemon, wait_for

# What the daemon needs of the host: the system, /tmp (its home) and where pfs and its Python live.
HOST_DIRS = dict.fromkeys(
    ["usr", "bin", "sbin", "lib", "lib64", "etc", "dev", "proc", "sys", "tmp"]
    + [Path(p).resolve().parts[1] for p in (PFS, sys.executable)]
)


class ChrootDaemon(Daemon):
    """`pfs serve` in a chroot of `root` (in a mount namespace of its own: nothing leaks out)."""

    def __init__(self, home, root):
        super().__init__(home)
        self.root = root

    def start(self) -> ChrootDaemon:
        self.home.mkdir(parents=True, exist_ok=True)
        binds = " ".join(d for d in HOST_DIRS if os.path.lexists(f"/{d}"))
        script = f"""set -e
mount --make-rprivate /
for d in {binds}; do
  if [ -L /$d ]; then ln -s "$(readlink /$d)" {self.root}/$d
  else mkdir -p {self.root}/$d && mount --rbind /$d {self.root}/$d; fi
done
exec chroot {self.root} {PFS} serve
"""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--fork", "--kill-child=SIGTERM", "sh", "-c", script],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        wait_for(self.answers, proc=self.proc, what="the chrooted daemon to answer")
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        """unshare leaves SIGTERM to its child, the daemon: that is who is told to stop."""
        if self.proc is not None and self.proc.poll() is None:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                for pid in f.read().split():
                    os.kill(int(pid), sig)
        return super().stop(sig)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a chroot")
def test_a_worker_in_a_chroot_fails_its_datums_saying_why(tmp_home):
    root = tmp_home / "chroot"
    root.mkdir()
    d = ChrootDaemon(tmp_home / "home", root)
    try:
        d.start()
        d.pfs("create-repo", "in")
        d.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
        spec = {
            "pipeline": {"name": "walk"},
            "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/in/. /pfs/out/"]},
            "input": {"atom": {"repo": "in", "glob": "/*"}},
            "datum_tries": 1,
        }
        (tmp_home / "walk.json").write_text(json.dumps(spec))
        d.pfs("create-pipeline", "-f", str(tmp_home / "walk.json"))
        [job] = json.loads(d.pfs("flush-job", "in@master", "--json").stdout)
        assert job["state"] == "failure"
        assert "cannot show the datum at /pfs" in job["reason"] and "not a mount point" in job["reason"], job["reason"]
        assert not (root / "pfs").exists()  # nothing was made at the chroot's /pfs
    finally:
        try:
            d.stop()
        finally:
            d.kill()
