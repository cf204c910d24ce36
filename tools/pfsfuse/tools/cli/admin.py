"""Admin verbs: serve, shutdown, fsck, garbage-collect, version, inspect-cluster, delete-all, bench."""

from __future__ import annotations

import os

import click

from pfsfuse.api.connect import connect, local_home, wait_stopped
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, NotFound, PermissionDenied, Unauthenticated
from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import size


def _tls(ctx, param, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    cert, _, key = value.partition(",")
    if not cert or not key:
        raise click.BadParameter("expected CERT,KEY: a certificate file and its key file, both PEM")
    return cert, key


def _user(ctx, param, value: str | None) -> str | None:
    from pfsfuse.metadata.errors import InvalidArgument
    from pfsfuse.scheduler import identity

    if value:
        try:
            identity.check(value)
        except InvalidArgument as e:
            raise click.BadParameter(str(e)) from None
    return value


@click.command("serve")
@click.option("--listen", metavar="HOST:PORT", help="Also serve the API on TCP (needs auth activated, or --insecure).")
@click.option(
    "--tls",
    metavar="CERT,KEY",
    callback=_tls,
    help="Serve TCP (--listen and --s3) over HTTPS with this PEM certificate and key.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve --listen or --s3 even though auth is not activated: anyone reaching them may do anything.",
)
@click.option("--storage", metavar="URL", help="Object store for a new store (default: file://$PFS_HOME/chunks).")
@click.option(
    "--executor",
    type=click.Choice(["local", "kubernetes"]),
    default=None,
    help="Run workers as processes here or as pods ($PFS_KUBE_* settings); default: kubernetes inside a cluster.",
)
@click.option("--s3", metavar="HOST:PORT", help="Also serve the repos over S3 (buckets BRANCH.REPO).")
@click.option(
    "--pipeline-user",
    metavar="USER[:GROUP]",
    callback=_user,
    help="Whom commands run as when their spec names no transform.user (default: $PFS_PIPELINE_USER, or nobody).",
)
@click.option(
    "--allow-root-commands",
    is_flag=True,
    help="Let a spec's transform.user be root: such a command can read anything here, the store included.",
)
@click.option(
    "--max-workers",
    type=click.IntRange(1, 100_000),
    help="The most workers all pipelines together may run here (default: $PFS_MAX_WORKERS, or 8 per CPU, at least 64).",
)
@click.option("--console", metavar="HOST:PORT", help="Also serve the web console (see `pfs console`).")
def serve(
    listen: str | None,
    tls: tuple[str, str] | None,
    insecure: bool,
    storage: str | None,
    executor: str | None,
    s3: str | None,
    pipeline_user: str | None,
    allow_root_commands: bool,
    max_workers: int | None,
    console: str | None,
) -> None:
    """Run the daemon that owns $PFS_HOME, in the foreground.

    What put-file's URLs and pipelines' egress may reach is set in $PFS_HOME/policy.toml
    (docs/security.md); with --listen, by default no loopback, link-local or private address
    and no file://."""
    import logging

    from pfsfuse import daemon  # the server stack: only this verb needs it

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The workers, started by the daemon, take these from its environment.
    if pipeline_user:
        os.environ["PFS_PIPELINE_USER"] = pipeline_user
    if allow_root_commands:
        os.environ["PFS_ALLOW_ROOT_COMMANDS"] = "1"
    if max_workers:
        os.environ["PFS_MAX_WORKERS"] = str(max_workers)
    daemon.serve(Home(), storage, listen, tls=tls, insecure=insecure, executor=executor, s3=s3, console=console)


@click.command("console")
@click.option("--open", "open_", is_flag=True, help="Open it in a web browser too.")
def console(open_: bool) -> None:
    """Print the URL of the local daemon's web console (`pfs serve --console HOST:PORT`), with a
    one-time sign-in link when auth is active."""
    from pfsfuse import console as web
    from pfsfuse.api.auth import RemoteAuth
    from pfsfuse.api.connect import token

    home = Home()
    base = web.address(home.path)
    if base is None:
        raise click.ClickException(
            f"the daemon of {home.path} serves no console: start it with pfs serve --console 127.0.0.1:PORT"
        )
    link = base + "/"
    mine = token(home)
    if mine:
        auth = RemoteAuth(f"unix:{home.socket}", mine)
        try:
            otp = auth.get_otp(auth.who_am_i().subject, 300.0)
            link = f"{base}/signin?otp={otp.token}"
        except FailedPrecondition:
            pass  # auth is not active: the console needs no sign-in
        finally:
            auth.close()
    click.echo(link)
    if open_:
        import webbrowser

        webbrowser.open(link)


@click.command("shutdown")
@pass_app
def shutdown(app: App) -> None:
    """Stop the daemon this client talks to; a local one is gone (its store closed) on return."""
    client = connect(start=False)
    try:
        client.shutdown()
    finally:
        client.close()
    home = local_home()
    if home is not None:
        wait_stopped(home)


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
    "--orphan-age",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
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
        app.out.line(f"{r.orphans_waiting} unindexed packs kept until they are {orphan_age:g} s old (--orphan-age)")


@click.command("version")
@click.option("--client-only", is_flag=True, help="Print the client's version only (no daemon needed).")
@pass_app
def version(app: App, client_only: bool) -> None:
    """Print the client's and the daemon's versions."""
    views.version(None if client_only else app.client, app.out)


@click.command("inspect-cluster")
@pass_app
def inspect_cluster(app: App) -> None:
    """Show the daemon this client talks to: its address, version, storage and contents."""
    client = app.client
    home = Home(client.address[5:].rpartition("/")[0]) if client.address.startswith("unix:") else None
    config = home.config() if home is not None else None  # readable only on the daemon's host
    try:
        traffic = client.traffic()
        served, received = size(traffic.served), size(traffic.received)
    except (PermissionDenied, Unauthenticated):  # admins only
        served = received = "-"
    app.out.fields(
        [
            ("Address", client.address),
            ("Version", client.version()),
            ("Storage", config.storage if config is not None else "-"),
            ("Repos", str(len(client.list_repo()))),
            ("Pipelines", str(len(app.pipelines.list_pipeline()))),
            ("Data served", served),  # file bytes sent by the daemon itself (direct readers use none)
            ("Data received", received),
        ]
    )


@click.command("delete-all")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def delete_all(app: App, yes: bool) -> None:
    """Delete every pipeline (and its jobs) and every repo (and its commits and files)."""
    if not yes:
        click.confirm("Are you sure you want to delete all repos, commits, files, pipelines and jobs?", abort=True)
    for p in app.pipelines.list_pipeline():
        app.pipelines.delete_pipeline(p.name, force=True)
    for r in app.client.list_repo():
        try:
            app.client.delete_repo(r.name, force=True)
        except NotFound:
            pass  # a pipeline's repo, gone with it


@click.command("bench")
@click.argument(
    "suite",
    type=click.Choice(
        [
            "store",
            "split",
            "gc",
            "mount",
            "posix",
            "objstore",
            "pipelines",
            "auth",
            "direct",
            "compare",
            "checkout",
            "sdk",
            "bigdir",
            "startup",
        ]
    ),
    default="store",
)
@click.option("--runs", default=3, show_default=True, help="Runs per figure (the median is shown).")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), help="Where to put scratch data (default /tmp).")
@click.option(
    "--only",
    multiple=True,
    metavar="SECTION",
    help="Run only this section of the suite, e.g. get_big_file_cold (repeatable).",
)
@click.option(
    "--entries",
    type=click.IntRange(10, 10_000_000),
    help="Entries of the directory of `bigdir` (default 100,000).",
)
@pass_app
def bench(app: App, suite: str, runs: int, workdir: str | None, only: tuple[str, ...], entries: int | None) -> None:
    """Benchmark against a reference on this machine (scratch store; needs several GiB free).

    `compare` runs version, change and checkout workloads through pfsfuse (the checkout also
    with cp -r out of a mount), git and DVC (those installed); `checkout` is its checkout rows
    alone; `compare --only big_file` checks out one 1 GiB file beside DVC and cp. `posix` runs
    fio's random writes and a sqlite workload on the mount beside JuiceFS and the disk, and
    `ls -l` with and without stats. `bigdir` lists one flat directory of --entries files
    (find, ls, list-file, a prefix glob) beside the disk, with the daemon's and the mount's memory.
    `startup` times the common read-only verbs from start to exit beside a bare `python3 -c pass`
    and `git status`.
    """
    from pfsfuse.tools import bench as benchmarks  # heavy, and only this verb needs it

    app.out.line(benchmarks.HEADER, flush=True)
    try:
        benchmarks.run(suite, runs, workdir, lambda f: app.out.line(f.row(), flush=True), list(only), entries)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
