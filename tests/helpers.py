"""Helpers shared by the tests (importable as `helpers`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pfsfuse.api.remote import RemoteClient
from pfsfuse.home import Home
from pfsfuse.metadata.errors import Unavailable

PFS = str(Path(sys.executable).parent / "pfs")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, proc=None, what="condition"):
    """Poll `condition` until it holds; fail at the deadline or as soon as `proc` dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def read_line(stream, timeout: float = 30.0) -> bytes:
    """One line from a subprocess pipe, failing at the deadline instead of hanging."""
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no complete line within {timeout} s (got {buf!r})")
        piece = os.read(fd, 1)
        if not piece:
            raise AssertionError(f"stream ended before a complete line (got {buf!r})")
        buf += piece
    return buf


def rows(output: str) -> list[list[str]]:
    """A table's rows (header dropped), split on runs of two or more spaces."""
    lines = [l for l in output.splitlines() if l.strip()]
    return [re.split(r"\s{2,}", l.strip()) for l in lines[1:]]


class Daemon:
    def __init__(self, home: Path, extra_args=()):
        self.home = home
        # An explicit address: a client must never start a daemon of its own behind a test's back.
        self.env = {**os.environ, "PFS_HOME": str(home), "PFS_ADDRESS": f"unix:{home}/pfs.sock"}
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
