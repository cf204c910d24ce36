"""`python -m pfsfuse.s3gateway HOST:PORT`: the S3 gateway on its own, in front of the daemon
that `pfsfuse.Client()` finds (PFS_ADDRESS, else PFS_HOME's) or `--address`."""

from __future__ import annotations

import logging
import signal
import sys

import click


@click.command()
@click.argument("listen", metavar="HOST:PORT")
@click.option("--address", metavar="ADDR", help="The daemon (unix:/path or host:port); default as the pfs command.")
@click.option(
    "--credentials",
    "pairs",
    metavar="KEY:SECRET",
    multiple=True,
    help="Require SigV4 signatures with these key pairs (default: accept any credentials).",
)
@click.option(
    "--tokens",
    is_flag=True,
    help="The daemon has auth active: take pfs tokens as credentials (access key = secret key = a token), "
    "each request acting as its token's subject.",
)
def main(listen: str, address: str | None, pairs: tuple[str, ...], tokens: bool) -> None:
    """Serve the daemon's repos over S3: bucket BRANCH.REPO, or COMMIT.REPO read-only."""
    import trio

    from pfsfuse import httpserve
    from pfsfuse.metadata.errors import PfsError
    from pfsfuse.s3gateway import AcceptAny, StaticCredentials, make_app
    from pfsfuse.sdk import Client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if any(":" not in p for p in pairs):
        raise click.BadParameter("expected KEY:SECRET", param_hint="--credentials")
    auth = StaticCredentials(dict(p.split(":", 1) for p in pairs)) if pairs else AcceptAny()
    try:
        client = Client(address)
        client.version()  # the daemon answers, or one clear line now
    except PfsError as e:
        click.echo(f"pfs s3 gateway: {e}", err=True)
        sys.exit(1)
    if tokens:
        if pairs:
            raise click.UsageError("give --tokens or --credentials, not both")
        client, auth = _as_callers(client)

    async def run() -> None:
        stop = trio.Event()

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for _ in received:
                    stop.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(signals)
            app = make_app(client, auth)
            await httpserve.serve(app, httpserve.config(listen, keep_alive=75.0), stop)
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    finally:
        client.close()


def _as_callers(client):
    """A client that sends each request's own token, and credentials checked by the daemon: a
    token the daemon does not know (expired, revoked) is refused."""
    from pfsfuse.api.auth import RemoteAuth
    from pfsfuse.api.remote import RemoteClient
    from pfsfuse.s3gateway import TokenCredentials, caller_token
    from pfsfuse.sdk import Client

    address = client.address
    client.close()

    def identify(token: str) -> object:
        a = RemoteAuth(address, token)
        try:
            return a.who_am_i()
        finally:
            a.close()

    return Client.wrap(RemoteClient(address, token=caller_token)), TokenCredentials(lambda: True, identify)


if __name__ == "__main__":
    main()
