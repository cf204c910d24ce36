"""Admin verbs: serve, shutdown, fsck, garbage-collect, version, bench."""

from __future__ import annotations

import click

from pfsfuse.api.connect import connect
from pfsfuse.home import Home
from pfsfuse.version import VERSION
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import size


@click.command("serve")
@click.option("--listen", metavar="HOST:PORT", help="Also serve the API on TCP.")
@click.option("--storage", metavar="URL", help="Object store for a new store (default: file://$PFS_HOME/chunks).")
@click.option("--s3", metavar="HOST:PORT", help="Also serve the repos over S3 (buckets BRANCH.REPO).")
def serve(listen: str | None, storage: str | None, s3: str | None) -> None:
    """Run the daemon that owns $PFS_HOME, in the foreground."""
    import logging

    from pfsfuse import daemon  # the server stack: only this verb needs it

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    daemon.serve(Home(), storage, listen, s3)


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


@click.command("garbage-collect")
@click.option("--dry-run", is_flag=True, help="Report what would be freed; delete nothing.")
@click.option(
    "--orphan-age", type=click.FloatRange(min=0), default=3600.0, show_default=True, metavar="SECONDS",
    help="Delete packs no index entry refers to (left by a crashed write) once first seen this long ago.",
)
@json_option
@pass_app
def garbage_collect(app: App, dry_run: bool, orphan_age: float, as_json: bool) -> None:
    """Delete the chunks and tree pages that no commit refers to.

    Deleted commits and files keep their data until a collection: run it after deleting
    sensitive data to purge it from the chunk store. Reads and writes go on meanwhile.
    """
    r = app.client.garbage_collect(dry_run, orphan_age)
    if as_json:
        return app.out.json(r)
    verb = "Would free" if dry_run else "Freed"
    app.out.line(
        f"{verb} {size(r.chunk_bytes + r.page_bytes)}: {r.chunks} chunks ({r.packs_deleted} packs "
        f"deleted, {r.packs_rewritten} rewritten, {r.orphan_packs} orphan packs deleted) and "
        f"{r.pages} tree pages, in {r.seconds:.1f} s"
    )
    if r.orphans_waiting:
        app.out.line(
            f"{r.orphans_waiting} unindexed packs kept until they are {orphan_age:g} s old (--orphan-age)"
        )


@click.command("version")
@pass_app
def version(app: App) -> None:
    """Print the client's and the daemon's versions."""
    app.out.table(["COMPONENT", "VERSION"], [["pfs", VERSION], ["pfsd", app.client.version()]])


@click.command("bench")
@click.argument("suite", type=click.Choice(["store", "split", "gc", "mount", "objstore", "pipelines"]), default="store")
@click.option("--runs", default=3, show_default=True, help="Runs per figure (the median is shown).")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), help="Where to put scratch data (default /tmp).")
@click.option("--only", multiple=True, metavar="SECTION", help="Run only this section of the suite, e.g. get_big_file_cold (repeatable).")
@pass_app
def bench(app: App, suite: str, runs: int, workdir: str | None, only: tuple[str, ...]) -> None:
    """Benchmark against a reference on this machine (scratch store; needs several GiB free)."""
    from pfsfuse.tools import bench as benchmarks  # heavy, and only this verb needs it

    app.out.line(benchmarks.HEADER, flush=True)
    try:
        benchmarks.run(suite, runs, workdir, lambda f: app.out.line(f.row(), flush=True), list(only))
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
