"""Admin verbs: serve, shutdown, fsck, version."""

from __future__ import annotations

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
    import logging

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


@click.command("bench")
@click.argument("suite", type=click.Choice(["store"]), default="store")
@click.option("--runs", default=3, show_default=True, help="Runs per figure (the median is shown).")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), help="Where to put scratch data (default /tmp).")
@pass_app
def bench(app: App, suite: str, runs: int, workdir: str | None) -> None:
    """Benchmark against a reference on this machine (scratch store; needs several GiB free)."""
    from pfsfuse.tools import bench as benchmarks  # heavy, and only this verb needs it

    header = f"{'BENCHMARK':58} {'OURS':>12} {'REFERENCE':>12} {'RATIO':>6}  {'GOAL':<16} OK"
    app.out.line(header, flush=True)

    def report(f: benchmarks.Figure) -> None:
        ref = "" if f.reference is None else f"{f.reference:12.1f}"
        app.out.line(
            f"{f.name:58} {f.ours:12.1f} {ref:>12} {f.ratio:>6}  {f.goal:<16} {'yes' if f.ok else 'NO'}",
            flush=True,
        )

    benchmarks.run(suite, runs, workdir, report)


COMMANDS = [serve, shutdown, fsck, version, bench]
