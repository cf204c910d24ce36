"""`pfs serve`: the process that owns a PFS_HOME, the composition of store, API and scheduler.

One daemon per PFS_HOME, enforced with a lock on its pid file. It serves the storage and pipeline
APIs on the unix socket in PFS_HOME (and on TCP when asked), runs the scheduler and its workers,
and stops cleanly on SIGTERM, SIGINT or `pfs shutdown`.
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
from pfsfuse.chunks import StorageError
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, PfsError, Unavailable
from pfsfuse.scheduler.api import routes as pipeline_routes
from pfsfuse.scheduler.executor import LocalExecutor
from pfsfuse.scheduler.jobs import JobStore
from pfsfuse.scheduler.scheduler import Scheduler
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


def serve(home: Home, storage: str | None = None, listen: str | None = None, s3: str | None = None) -> None:
    """Run the daemon until SIGTERM, SIGINT or a shutdown request; with `s3` (HOST:PORT), the
    S3 gateway too, as a client of the daemon's own socket (so every request meets its checks)."""
    home.ensure()
    lock = _lock(home)
    try:
        store = _open(home, storage)
        try:
            trio.run(_serve, store, home, listen, s3)
        finally:
            store.close()
    finally:
        os.close(lock)


def _open(home: Home, storage: str | None) -> Store:
    """The store, its object store checked: a missing bucket or bad credentials is one error
    now rather than a retry loop later."""
    try:
        store = Store(home, storage)
    except ValueError as e:  # a storage URL no backend takes
        raise InvalidArgument(str(e)) from None
    except StorageError as e:
        raise Unavailable(str(e)) from None
    try:
        store.objects.check()
    except StorageError as e:
        store.close()
        raise Unavailable(str(e)) from None
    return store


async def _serve(store: Store, home: Home, listen: str | None, s3: str | None = None) -> None:
    stop = trio.Event()
    if home.socket.exists():
        home.socket.unlink()  # left by a daemon that died; we hold the lock, so it is stale
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, stop)
            executor = LocalExecutor(home.path, f"unix:{home.socket}", nursery)
            scheduler = Scheduler(store, JobStore(store.db), executor, store.wait_changed)
            executor.lost = scheduler.worker_lost
            routes = pipeline_routes(scheduler)
            # The servers return once `stop` is set and their connections have closed.
            async with trio.open_nursery() as servers:
                unix = make_app(store, stop.set, trusted=True, routes=routes)
                await servers.start(_serve_one, unix, _hypercorn_config(f"unix:{home.socket}"), stop)
                if listen:
                    tcp = make_app(store, stop.set, trusted=False, routes=routes)
                    await servers.start(_serve_one, tcp, _hypercorn_config(listen), stop)
                if s3:
                    from pfsfuse import s3gateway
                    from pfsfuse.sdk import Client

                    gateway = s3gateway.make_app(Client(f"unix:{home.socket}", home=home.path))
                    await servers.start(_serve_one, gateway, s3gateway.hypercorn_config(s3), stop)
                await servers.start(_until, scheduler.run, stop)
                log.info("serving %s on %s%s", home.path, home.socket, f" and {listen}" if listen else "")
            nursery.cancel_scope.cancel()
    finally:
        home.socket.unlink(missing_ok=True)


async def _until(service, stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run a service until the daemon stops."""
    async with trio.open_nursery() as nursery:
        await nursery.start(service)
        task_status.started()
        await stop.wait()
        nursery.cancel_scope.cancel()


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
