"""Mount verbs: mount, unmount."""

from __future__ import annotations

import click

from pfsfuse.tools.cli.app import App, pass_app


@click.command("mount")
@click.argument("mountpoint", type=click.Path())
@click.option("--repos", default="", help="Only these repos (comma-separated).")
@click.option(
    "-c",
    "--commit",
    "pinned",
    multiple=True,
    metavar="REPO:REF",
    help="Show REF's files directly at MOUNTPOINT/REPO (repeatable).",
)
@click.option("--read-only", is_flag=True, help="Refuse every write.")
@click.option("--foreground", is_flag=True, help="Stay attached until unmounted.")
@click.option(
    "--idle",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds a branch stays quiet before the mount finishes its commit.",
)
@click.option(
    "--allow-other",
    is_flag=True,
    help="Serve other users too, the kernel checking each entry's mode and owner (as root, or "
    "with user_allow_other in /etc/fuse.conf).",
)
@pass_app
def mount(
    app: App,
    mountpoint: str,
    repos: str,
    pinned: tuple[str, ...],
    read_only: bool,
    foreground: bool,
    idle: float,
    allow_other: bool,
) -> None:
    """Mount the store at MOUNTPOINT: MOUNTPOINT/<repo>/<branch or commit>/<path>.

    Writes under a branch go into its open commit, started on the first write and finished when
    the branch has been quiet for --idle seconds with no file open for writing, and at unmount.
    """
    from pfsfuse.mount import main as mounting  # FUSE and trio: only these verbs need them

    pins = mounting.parse_pinned(list(pinned))
    if foreground:
        mounting.run(mountpoint, [r for r in repos.split(",") if r], pins, read_only, idle, allow_other=allow_other)
        return
    args = [mountpoint, "--repos", repos, "--idle", str(idle)]
    for spec in pinned:
        args += ["-c", spec]
    if read_only:
        args.append("--read-only")
    if allow_other:
        args.append("--allow-other")
    mounting.mount_background(mountpoint, args)


@click.command("unmount")
@click.argument("mountpoint", type=click.Path(), required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Unmount every mount of this store that you made.")
@pass_app
def unmount(app: App, mountpoint: str | None, all_: bool) -> None:
    """Unmount, after the mount has finished the commits it started.

    Exits non-zero, listing them, if any change made through the mount could not be saved.
    """
    from pfsfuse.mount import main as mounting

    if all_ == (mountpoint is not None):
        raise click.UsageError("give either a mount point or --all")
    done = mounting.unmount_all() if mountpoint is None else [mounting.unmount(mountpoint)]
    if all_:
        for d in done:
            click.echo(f"unmounted {d.mountpoint}")
        if not done:
            click.echo("no mounts of this store to unmount")
    lost = [line for d in done for line in d.lost]
    for d in done:
        if d.note is not None:
            click.echo(f"note: {d.note}", err=True)
    for line in lost:
        click.echo(f"not saved: {line}", err=True)
    if lost:
        raise click.ClickException(f"{len(lost)} changes made through the mount were not saved (listed above)")
