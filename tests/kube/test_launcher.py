"""The static launcher (packaging/launcher/launcher.c), built here with gcc -static and driven by
the worker's side (`pfsfuse.scheduler.kube.launcher`) over a real unix socket."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import wait_for
from pfsfuse.metadata.errors import FailedPrecondition, Unavailable
from pfsfuse.scheduler.kube.launcher import Launcher

SOURCE = Path(__file__).parents[2] / "packaging" / "launcher" / "launcher.c"


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (Debian: apt-get install gcc libc6-dev): the launcher cannot be built")
    out = tmp_path_factory.mktemp("launcher") / "launcher"
    r = subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 and "cannot find -lc" in r.stderr:
        pytest.skip("no static C library (Debian: apt-get install libc6-dev): the launcher cannot be built static")
    assert r.returncode == 0, r.stderr
    assert b"statically linked" in subprocess.run(["file", str(out)], capture_output=True).stdout or not shutil.which(
        "file"
    )
    return out


@pytest.fixture
def launcher(binary, tmp_path):
    sock = str(tmp_path / "worker.sock")
    # The launcher starts first and waits for the socket, as in a pod whose sidecar is slow.
    proc = subprocess.Popen([str(binary)], env={"PFS_LAUNCHER_SOCKET": sock}, stderr=subprocess.PIPE)
    side = Launcher(sock)
    try:
        side.wait(timeout=10)
        yield side, proc
    finally:
        side.close()
        try:
            assert proc.wait(timeout=10) == 0  # the worker went: the launcher ends, and the pod with it
        finally:
            if proc.poll() is None:
                proc.kill()


ENV = {"PATH": "/usr/bin:/bin"}


def test_runs_commands_with_argv_env_cwd_and_stdin(launcher, tmp_path):
    side, proc = launcher
    assert side.pid == proc.pid
    r = side.run(
        ["sh", "-c", 'echo "$1 $GREETING"; pwd; cat; echo oops >&2', "sh", "one arg"],
        {**ENV, "GREETING": "hi there"},
        cwd=str(tmp_path),
        stdin=b"line 1\nline 2\n",
    )
    assert r.status == "exit 0" and r.code == 0
    assert r.output.decode().splitlines() == ["one arg hi there", str(tmp_path), "line 1", "line 2", "oops"]
    assert side.run(["sh", "-c", "exit 3"], ENV).status == "exit 3"
    assert side.run(["sh", "-c", "kill -TERM $$"], ENV).status == "signal 15"


def test_output_streams_as_it_comes(launcher):
    side, _ = launcher
    pieces = []
    r = side.run(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"], ENV, output=pieces.append)
    assert r.code == 0 and len(pieces) >= 2 and b"".join(pieces) == b"1\n2\n3\n"


def test_big_output_and_stdin_do_not_deadlock(launcher):
    side, _ = launcher
    data = os.urandom(3 << 20)
    r = side.run(["cat"], ENV, stdin=data)
    assert r.code == 0 and r.output == data


def test_a_timeout_kills_the_whole_group(launcher, tmp_path):
    side, _ = launcher
    left = tmp_path / "grandchild.pid"
    r = side.run(["sh", "-c", f"sleep 30 & echo $! > {left}; wait"], ENV, timeout=0.5)
    assert r.status == "timeout" and r.code is None
    pid = int(left.read_text())
    wait_for(lambda: _gone(pid), timeout=10, what="the command's background child to be killed")


def _gone(pid: int) -> bool:
    """Whether a process is gone (or dead, a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2].startswith("Z")
    except FileNotFoundError:
        return True


def test_commands_that_cannot_start_say_why(launcher, tmp_path):
    side, _ = launcher
    with pytest.raises(FailedPrecondition, match="cannot run no-such-command: cannot run the command: No such file"):
        side.run(["no-such-command"], ENV)
    with pytest.raises(FailedPrecondition, match="cannot enter the working directory"):
        side.run(["true"], ENV, cwd=str(tmp_path / "missing"))
    assert side.run(["true"], ENV).code == 0  # and it goes on serving


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runs_as_the_given_user(launcher, tmp_path):
    side, _ = launcher
    r = side.run(["sh", "-c", "id -u; id -g; id -G"], ENV, uid=65534, gid=65534)
    assert r.output.decode().split() == ["65534", "65534", "65534"]


def test_the_worker_waits_for_a_launcher_with_a_clear_error(tmp_path):
    side = Launcher(str(tmp_path / "worker.sock"))
    try:
        with pytest.raises(Unavailable, match="the launcher did not connect"):
            side.wait(timeout=0.2)
    finally:
        side.close()


def test_sigterm_lets_the_running_command_finish_and_says_so(launcher, tmp_path):
    """Kubernetes' SIGTERM: the launcher does not stop (it would not even die of it, as PID 1),
    the running command runs to its end, and the worker is told, mid-run or between commands."""
    side, proc = launcher
    mark = tmp_path / "started"
    script = f"touch {mark}; sleep 1; echo finished"

    def later():
        wait_for(mark.exists, what="the command to start")
        proc.send_signal(signal.SIGTERM)

    killer = threading.Thread(target=later)
    killer.start()
    try:
        ended = side.run(["sh", "-c", script], ENV)
    finally:
        killer.join()
    assert ended.status == "exit 0" and ended.output == b"finished\n"
    assert side.terminating and proc.poll() is None
    side.check()  # told once: nothing more between commands
    proc.send_signal(signal.SIGTERM)
    assert side.run(["echo", "more"], ENV).output == b"more\n"


def test_sigterm_between_commands_is_told_at_once(launcher):
    side, proc = launcher
    side.check()
    assert not side.terminating
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: (side.check(), side.terminating)[1], what="the launcher to say the pod is terminating")
    assert side.run(["true"], ENV).status == "exit 0"  # until the worker goes, commands still run
