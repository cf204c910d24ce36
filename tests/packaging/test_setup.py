"""packaging/: the product's setup puts `pfs` on the PATH of a new shell without the test
toolchain, says what it does step by step, and names the step that fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers import REPO, rows

SETUP = REPO / "packaging" / "setup.sh"
STEPS = REPO / "packaging" / "steps.sh"


def _setup(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    # A stub npm first on the PATH: the product's setup must never reach for Node.js.
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "npm").write_text(f"#!/bin/sh\ntouch {tmp_path}/npm-ran\nexit 1\n")
    (stubs / "npm").chmod(0o755)
    env = {**os.environ, "PFS_BIN_DIR": str(bin_dir), "PATH": f"{stubs}:{os.environ['PATH']}"}
    r = subprocess.run([str(SETUP)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "npm-ran").exists()
    return r


def test_setup_puts_pfs_on_the_path_of_a_new_shell(tmp_path, tmp_home):
    bin_dir = tmp_path / "bin"
    first = _setup(tmp_path, bin_dir)
    steps = [line for line in first.stdout.splitlines() if line.startswith("==> ")]
    assert len(steps) == 6 and "pfs on the PATH of every shell" in steps[-1], first.stdout
    assert (bin_dir / "pfs").resolve() == (REPO / ".venv" / "bin" / "pfs").resolve()
    # A new login shell: nothing of this environment, no venv activated.
    home = tmp_path / "home"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "PFS_HOME": str(tmp_home / "store")}
    try:
        r = subprocess.run(["pfs", "version"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert [row[0] for row in rows(r.stdout)] == ["pfs", "pfsd"], r.stdout  # the daemon answered
    finally:
        subprocess.run(["pfs", "shutdown"], env=env, capture_output=True, timeout=60)
    # Again: everything is found in place, nothing is installed.
    second = _setup(tmp_path, bin_dir)
    assert "up to date" in second.stdout and "all there" in second.stdout, second.stdout


def _step(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; . {STEPS}; {script}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_a_failing_step_is_named_with_its_output(tmp_path):
    r = _step(
        tmp_path, 'f() { echo "npm ERR! 404 azurite@9.9.9"; return 3; }; step "Azurite in .emulators" f; echo after'
    )
    assert r.returncode == 3
    assert r.stdout == "==> Azurite in .emulators\n"  # and nothing after it ran
    assert "npm ERR! 404 azurite@9.9.9" in r.stderr
    assert r.stderr.splitlines()[-1].startswith('setup failed at step "Azurite in .emulators" (exit 3)')


def test_a_step_stops_at_its_first_failing_command(tmp_path):
    # A function's later commands must not run (and e.g. stamp an install done) after a failure.
    r = _step(tmp_path, 'f() { false; touch done; }; step "install" f')
    assert r.returncode == 1 and not (tmp_path / "done").exists()
    r = _step(tmp_path, 'f() { echo "note: 3 packages"; echo noise; }; step "packages" f; echo after')
    assert r.returncode == 0 and r.stdout == "==> packages\n    3 packages\nafter\n", r.stdout
