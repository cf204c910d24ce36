"""Admin verbs: serve, shutdown, fsck, version."""

from __future__ import annotations

import logging

import click

from pfsfuse.api.connect import connect
from pfsfuse.home import Home
from pfsfuse.version import VERSION
from pfsfuse.tools.cli.app import App, json_option, pass_app


@click.command("serve")
@click.option("--listen", metavar="HOST:PORT", help="Also serve the API on TCP.")
@click.option("--storage", metavar="URL", help="Object store for a new store (default: file://$PFS_HOME/chunks).")
def serve(listen: str | None, storage: str | None) -> None:
    """Run the daemon that owns $PFS_HOME, in the foreground."""
    from pfsfuse import daemon  # the server stack: only this verb needs it

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    daemon.serve(Home(), storage, listen)


@click.command("shutdown")
@pass_app
def shutdown(app: App) -> None:
    """Stop the daemon this client talks to."""
    client = connect(start=False)
    try:
        client.shutdown()
    finally:
        client.close()


@click.command("fsck")
@json_option
@pass_app
def fsck(app: App, as_json: bool) -> None:
    """Check every invariant of the store; exit non-zero naming each problem."""
    problems = app.client.fsck()
    if as_json:
        app.out.json(problems)
    else:
        for p in problems:
            click.echo(p, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) found")
    if not as_json:
        app.out.line("ok: no problems found")


@click.command("version")
@pass_app
def version(app: App) -> None:
    """Print the client's and the daemon's versions."""
    app.out.table(["COMPONENT", "VERSION"], [["pfs", VERSION], ["pfsd", app.client.version()]])


COMMANDS = [serve, shutdown, fsck, version]
