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

import trio

from pfsfuse import h11serve, httpserve, urlpolicy
from pfsfuse.api import auth as auth_api
from pfsfuse.api import server
from pfsfuse.auth import Auth
from pfsfuse.chunks import StorageError
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, PfsError, Unavailable
from pfsfuse.scheduler.api import deletable as pipeline_deletable
from pfsfuse.scheduler.api import endpoints as pipeline_endpoints
from pfsfuse.scheduler.executor import LocalExecutor
from pfsfuse.scheduler.jobs import JobStore
from pfsfuse.scheduler.scheduler import Scheduler
from pfsfuse.store import Store

log = logging.getLogger("pfsfuse.daemon")


class DaemonRunning(FailedPrecondition):
    """Another daemon already owns this PFS_HOME."""


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


def serve(
    home: Home,
    storage: str | None = None,
    listen: str | None = None,
    *,
    tls: tuple[str, str] | None = None,
    insecure: bool = False,
    executor: str | None = None,
    s3: str | None = None,
    console: str | None = None,
) -> None:
    """Run the daemon until SIGTERM, SIGINT or a shutdown request. `listen` (HOST:PORT) also
    serves TCP, with HTTPS when `tls` is (certificate file, key file); TCP is refused while auth
    is not active unless `insecure`: anyone who reaches the port could do anything. Workers run
    as processes here (`executor` "local") or as pods ("kubernetes", the default in a cluster).
    With `s3` (HOST:PORT), the S3 gateway serves too, and with `console` (HOST:PORT) the web
    console, each as a client of the daemon's own socket."""
    if tls is not None and not (listen or s3):
        raise InvalidArgument("--tls serves the TCP listeners: give --listen or --s3 HOST:PORT too")
    for path in tls or ():
        if not os.access(path, os.R_OK):
            raise InvalidArgument(f"--tls: cannot read {path}")
    os.umask(0o077)  # the index, chunks, logs and socket are the owner's alone, whatever it was
    home.ensure()
    lock = _lock(home)
    try:
        make_executor = _executor(executor, home)  # a missing cluster is one error before anything starts
        store = _open(home, storage)
        try:
            auth = Auth(store.db)
            # The console signs its users in; on loopback without auth, it is as open as the socket.
            for exposed in (listen, s3, console if console and not _loopback(console) else None):
                if exposed and not auth.active and not insecure:
                    raise FailedPrecondition(
                        f"refusing to serve {exposed} without auth: anyone reaching it could read, change and "
                        "delete everything. Activate auth first (pfs auth activate --admins=USER, over the unix "
                        "socket), or pass --insecure to serve it open anyway"
                    )
            # Before the first request: what put-file's URLs and egress may reach on a caller's behalf.
            urlpolicy.install(urlpolicy.load(home.path, listening=bool(listen)))
            if listen and tls is None:
                log.warning("serving %s over plain HTTP: tokens and data travel unencrypted (--tls CERT,KEY)", listen)
            trio.run(_serve, store, auth, home, listen, tls, make_executor, s3, console)
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


def _executor(kind: str | None, home: Home):
    """How to make the executor in the daemon's nursery: workers as local processes, or as pods
    (the default inside a cluster)."""
    if kind is None:
        from pfsfuse.scheduler.kube.client import in_cluster

        kind = "kubernetes" if in_cluster() else "local"
    if kind == "local":
        return lambda nursery: LocalExecutor(home.path, f"unix:{home.socket}", nursery)
    from pfsfuse.scheduler.kube.client import api_client  # the kubernetes client: only this executor needs it
    from pfsfuse.scheduler.kube.executor import KubeExecutor
    from pfsfuse.scheduler.kube.settings import Settings

    settings, api = Settings.from_env(), api_client()
    return lambda nursery: KubeExecutor(settings, api, nursery)


async def _serve(
    store: Store,
    auth: Auth,
    home: Home,
    listen: str | None,
    tls: tuple[str, str] | None,
    make_executor,
    s3: str | None = None,
    console: str | None = None,
) -> None:
    stop = trio.Event()
    if home.socket.exists():
        home.socket.unlink()  # left by a daemon that died; we hold the lock, so it is stale
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, stop)
            executor = make_executor(nursery)
            scheduler = Scheduler(store, JobStore(store.db), executor, store.wait_changed)
            executor.lost = scheduler.worker_lost
            executor.token = auth.pipeline_token
            executor.trouble = scheduler.worker_trouble
            routes = [*pipeline_endpoints(scheduler), *auth_api.endpoints(auth)]
            counter = server.Counter()  # one count for both listeners

            def app(trusted: bool):
                storage = server.endpoints(
                    store,
                    stop.set,
                    trusted=trusted,
                    deletable=lambda repo: pipeline_deletable(scheduler, repo),
                    counter=counter,
                )
                return server.make_app([*storage, *routes], auth)

            # The servers return once `stop` is set and their connections have closed.
            async with trio.open_nursery() as servers:
                await servers.start(h11serve.serve, app(True), home.socket, stop)
                if listen:
                    await servers.start(httpserve.serve, app(False), httpserve.config(listen, tls), stop)
                if s3:
                    from pfsfuse import s3gateway
                    from pfsfuse.api.remote import RemoteClient
                    from pfsfuse.sdk import Client

                    # Each request acts as the caller whose token signed it (docs/security.md).
                    api = RemoteClient(f"unix:{home.socket}", home, token=s3gateway.caller_token)
                    creds = s3gateway.TokenCredentials(lambda: auth.active, auth.identify)
                    gateway = s3gateway.make_app(Client.wrap(api), creds)
                    await servers.start(httpserve.serve, gateway, httpserve.config(s3, tls), stop)
                if console:
                    from pfsfuse import console as web

                    site = web.make_app(f"unix:{home.socket}", home)
                    await servers.start(httpserve.serve, site, httpserve.config(console), stop)
                    web.publish(home.path, console)  # for `pfs console`
                await servers.start(_until, scheduler.run, stop)
                log.info("serving %s on %s%s", home.path, home.socket, f" and {listen}" if listen else "")
            nursery.cancel_scope.cancel()
    finally:
        home.socket.unlink(missing_ok=True)
        (home.path / "console").unlink(missing_ok=True)


def _loopback(bind: str) -> bool:
    """Whether HOST:PORT binds only this machine: the console's sign-in is then enough."""
    import ipaddress

    host = bind.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _until(service, stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run a service until the daemon stops."""
    async with trio.open_nursery() as nursery:
        await nursery.start(service)
        task_status.started()
        await stop.wait()
        nursery.cancel_scope.cancel()


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
