"""`pfs serve`: the process that owns a PFS_HOME, and `connect()`, which finds or starts it.

One daemon per PFS_HOME, enforced with a lock on its pid file. It serves the API on the unix socket
in PFS_HOME (and on TCP when asked) and stops cleanly on SIGTERM, SIGINT or `pfs shutdown`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys

import hypercorn.config
import hypercorn.trio
import trio

from pfsfuse.api.server import make_app
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, PfsError
from pfsfuse.store import Store

log = logging.getLogger("pfsfuse.daemon")


class DaemonRunning(FailedPrecondition):
    """Another daemon already owns this PFS_HOME."""


def _hypercorn_config(bind: str) -> hypercorn.config.Config:
    cfg = hypercorn.config.Config()
    cfg.bind = [bind]
    cfg.graceful_timeout = 2.0
    cfg.keep_alive_timeout = 300.0
    cfg.accesslog = None
    cfg.errorlog = log
    return cfg


def _lock(home: Home):
    """Hold an exclusive lock on the pid file for the daemon's lifetime."""
    fd = os.open(home.pidfile, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode().strip() or "?"
        os.close(fd)
        raise DaemonRunning(f"a pfs daemon (pid {other}) already serves {home.path}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def serve(home: Home, storage: str | None = None, listen: str | None = None) -> None:
    """Run the daemon until SIGTERM, SIGINT or a shutdown request."""
    home.ensure()
    lock = _lock(home)
    try:
        store = Store(home, storage)
        try:
            trio.run(_serve, store, home, listen)
        finally:
            store.close()
    finally:
        os.close(lock)


async def _serve(store: Store, home: Home, listen: str | None) -> None:
    stop = trio.Event()
    if home.socket.exists():
        home.socket.unlink()  # left by a daemon that died; we hold the lock, so it is stale
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, stop)
            # The servers return once `stop` is set and their connections have closed.
            async with trio.open_nursery() as servers:
                unix = make_app(store, stop.set, trusted=True)
                await servers.start(_serve_one, unix, _hypercorn_config(f"unix:{home.socket}"), stop)
                if listen:
                    tcp = make_app(store, stop.set, trusted=False)
                    await servers.start(_serve_one, tcp, _hypercorn_config(listen), stop)
                log.info("serving %s on %s%s", home.path, home.socket, f" and {listen}" if listen else "")
            nursery.cancel_scope.cancel()
    finally:
        home.socket.unlink(missing_ok=True)


async def _serve_one(app, cfg, stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED):
    await hypercorn.trio.serve(app, cfg, shutdown_trigger=stop.wait, task_status=task_status)


async def _signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        serve(Home())
    except DaemonRunning as e:
        print(f"pfs serve: {e}", file=sys.stderr)
    except PfsError as e:
        print(f"pfs serve: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
