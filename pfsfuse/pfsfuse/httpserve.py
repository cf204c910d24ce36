"""Serving an ASGI app with hypercorn under trio: the settings every listener shares, and two
places where hypercorn needs hardening for a server that strangers can reach.

1. One connection's failure stops only that connection. Hypercorn runs every connection in one
   nursery, so an exception escaping a connection ends the whole server. One does: a client that
   closes mid-body makes hypercorn send a 400 while the app's own answer or the closing EOF is
   being sent, and trio refuses the second sender with `BusyResourceError`. That was a daemon
   stopped by any client that hangs up at the wrong moment.
2. Reads of 1 MiB instead of 64 KiB. Each read goes through h11, an ASGI message and starlette's
   stream before reaching a put-file's thread: for bodies of GiB that per-read cost, not the
   bytes, was most of the daemon's CPU. Hypercorn has no setting for it; its module constant is it.
"""

from __future__ import annotations

import logging

import hypercorn.config
import hypercorn.trio
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import trio

log = logging.getLogger("pfsfuse.http")


def _peer_gone(e: BaseException) -> bool:
    """What a connection ends on when its peer has gone (or, racing hypercorn's own error reply,
    seemed to): nothing for an operator to act on."""
    if isinstance(e, BaseExceptionGroup):
        return all(_peer_gone(x) for x in e.exceptions)
    return isinstance(e, (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError))


class _OneConnection(hypercorn.trio.tcp_server.TCPServer):
    async def run(self) -> None:
        try:
            await super().run()
        except Exception as e:  # noqa: BLE001 - the server goes on; this connection is closed
            if _peer_gone(e):
                log.debug("a connection ended with its peer gone: %r", e)
            else:
                log.warning("a connection ended on an error in the HTTP layer", exc_info=e)


hypercorn.trio.run.TCPServer = _OneConnection  # type: ignore[misc]
hypercorn.trio.tcp_server.MAX_RECV = 1 << 20


def config(bind: str, tls: tuple[str, str] | None = None, keep_alive: float = 300.0) -> hypercorn.config.Config:
    """Settings for one listener: `bind` is `unix:PATH` or `HOST:PORT`; `tls` is (cert, key)."""
    cfg = hypercorn.config.Config()
    cfg.bind = [bind]
    if tls is not None:
        cfg.certfile, cfg.keyfile = tls
    cfg.graceful_timeout = 2.0
    cfg.keep_alive_timeout = keep_alive
    cfg.accesslog = None
    cfg.errorlog = log
    return cfg


async def serve(app, cfg: hypercorn.config.Config, stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` until `stop` is set and its connections have closed."""
    await hypercorn.trio.serve(app, cfg, shutdown_trigger=stop.wait, task_status=task_status)
