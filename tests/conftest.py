"""Shared fixtures: temporary PFS_HOMEs, real daemons in subprocesses, and the `pfs` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pfsfuse.api.remote import RemoteClient
from pfsfuse.home import Home
from pfsfuse.metadata.errors import Unavailable

BIN = Path(sys.executable).parent
PFS = str(BIN / "pfs")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, proc=None, what="condition"):
    """Poll `condition` until it holds; fail at the deadline or as soon as `proc` dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def tmp_home() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="pfs-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Daemon:
    def __init__(self, home: Path, extra_args=()):
        self.home = home
        self.env = {**os.environ, "PFS_HOME": str(home)}
        self.env.pop("PFS_ADDRESS", None)
        self.log = home.parent / (home.name + ".log")
        self.args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PFS, "serve", *self.args], env=self.env, stdout=log, stderr=log
            )
        wait_for(self.answers, proc=self.proc, what="the daemon to answer")
        return self

    def client(self) -> RemoteClient:
        return RemoteClient(f"unix:{self.home}/pfs.sock", Home(self.home))

    def answers(self) -> bool:
        client = self.client()
        try:
            client.version()
            return True
        except Unavailable:
            return False
        finally:
            client.close()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the daemon did not stop within 20 s of SIGTERM")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pfs(self, *args: str, input: bytes | None = None, check: bool = True, cwd=None):
        """Run the real `pfs` command against this daemon."""
        r = subprocess.run(
            [PFS, *args], env=self.env, input=input, capture_output=True, cwd=cwd, timeout=300
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"pfs {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
            )
        return r


@pytest.fixture
def daemon(tmp_home: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_home / "home")
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()
