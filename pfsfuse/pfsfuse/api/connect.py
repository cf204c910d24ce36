"""Finding the daemon: PFS_ADDRESS if set, else the local daemon of PFS_HOME, started on demand.

A TCP client given PFS_STORE_DIR (a directory holding a copy of the store's store.json, and the
object store's credentials unless the environment has them) reads and verifies chunks in the object
store itself, asking the daemon only where they are.

Kept apart from the daemon itself so that a client does not import the server's stack.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from typing import TYPE_CHECKING

from pfsfuse.api.remote import RemoteClient
from pfsfuse.home import Home
from pfsfuse.metadata.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    import subprocess


def token(home: Home | None = None) -> str | None:
    """The caller's token: $PFS_AUTH_TOKEN, else the one `pfs auth login` kept in $PFS_HOME."""
    return os.environ.get("PFS_AUTH_TOKEN") or (home or Home()).token()


def connect(home: Home | None = None, start: bool = True) -> RemoteClient:
    """A client for PFS_ADDRESS if set, else for the local daemon (started if not running)."""
    home = home or Home()
    address = os.environ.get("PFS_ADDRESS")
    if address:
        if address.startswith("unix:"):
            # A socket inside a PFS_HOME we can read: read chunks directly, as for our own home.
            return RemoteClient(address, Home(os.path.dirname(address[5:])), token(home))
        store_dir = os.environ.get("PFS_STORE_DIR")
        try:
            return RemoteClient(address, Home(store_dir) if store_dir else None, token(home))
        except InvalidArgument as e:
            raise InvalidArgument(f"PFS_ADDRESS={e}") from None
    client = RemoteClient(f"unix:{home.socket}", home, token(home))
    if _answers(client):
        return client
    if not start:
        raise Unavailable(f"no pfs daemon is running for {home.path}")
    proc = _start(home)
    deadline = time.monotonic() + 30
    while not _answers(client):
        code = proc.poll()
        if code:
            raise Unavailable(f"the pfs daemon exited with status {code}: {_last_line(home.log)}")
        if code == 0:
            # Another daemon held PFS_HOME (starting, or shutting down): try again.
            proc = _start(home)
        if time.monotonic() > deadline:
            raise Unavailable(f"the pfs daemon did not start within 30 s; see {home.log}")
        time.sleep(0.05)
    return client


def local_home(home: Home | None = None) -> Home | None:
    """The PFS_HOME of the daemon a client reaches, when it is on this host (a unix socket)."""
    address = os.environ.get("PFS_ADDRESS")
    if not address:
        return home or Home()
    return Home(os.path.dirname(address[5:])) if address.startswith("unix:") else None


def wait_stopped(home: Home, timeout: float = 60.0) -> None:
    """Return once the daemon of `home` has exited: its lock on the pid file is free, so the
    store's files are closed and may be copied, moved or served by a new daemon."""
    try:
        fd = os.open(home.pidfile, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"the pfs daemon of {home.path} did not exit within {timeout:.0f} s") from None
                time.sleep(0.05)
    finally:
        os.close(fd)


def _answers(client: RemoteClient) -> bool:
    try:
        client.version()
        return True
    except Unavailable:
        return False


def _start(home: Home) -> subprocess.Popen:
    import subprocess  # only here: a command whose daemon runs already need not load it

    home.ensure()
    with open(os.open(home.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pfsfuse.daemon"],
            env={**os.environ, "PFS_HOME": str(home.path)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _last_line(path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"see {path}"
    return lines[-1] if lines else f"see {path}"
