"""Commit verbs: start-commit, finish-commit, list-commit, inspect-commit, delete-commit,
subscribe-commit."""

from __future__ import annotations

import click

from pfsfuse.metadata.records import Commit
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import ago, commit_duration, size

HEADERS = ["REPO", "ID", "PARENT", "STARTED", "DURATION", "SIZE"]


def commit_row(c: Commit) -> list[str]:
    return [c.repo, c.id, c.parent or "<none>", ago(c.started), commit_duration(c), size(c.size)]


@click.command("start-commit")
@click.argument("repo")
@click.argument("branch", required=False)
@click.option("-p", "--parent", help="The parent commit (a commit id or ref); default: the branch head.")
@click.option("-m", "--message", "--description", "message", default="", help="A description.")
@pass_app
def start_commit(app: App, repo: str, branch: str | None, parent: str | None, message: str) -> None:
    """Start a new commit on BRANCH (the branch head moves to it) and print its id."""
    if branch is None and parent is None:
        raise click.UsageError("start-commit needs a BRANCH or a parent (-p)")
    c = app.client.start_commit(repo, branch, parent, message)
    app.out.line(c.id)


@click.command("finish-commit")
@click.argument("repo")
@click.argument("ref")
@click.option("-m", "--message", "--description", "message", default=None, help="A description.")
@pass_app
def finish_commit(app: App, repo: str, ref: str, message: str | None) -> None:
    """Finish an open commit (REF: its id or its branch)."""
    app.client.finish_commit(repo, ref, message)


@click.command("list-commit")
@click.argument("repo")
@click.argument("ref", required=False)
@click.option("-n", "--number", type=click.IntRange(min=0), help="Show at most N commits.")
@click.option("--from", "since", help="Only commits after this one.")
@json_option
@pass_app
def list_commit(app: App, repo: str, ref: str | None, number: int | None, since: str | None, as_json: bool) -> None:
    """List the commits of a repo, newest first, or the history of REF."""
    commits = app.client.list_commit(repo, ref, number, since)
    if as_json:
        return app.out.json(commits)
    app.out.table(HEADERS, (commit_row(c) for c in commits))


@click.command("inspect-commit")
@click.argument("repo")
@click.argument("ref")
@json_option
@pass_app
def inspect_commit(app: App, repo: str, ref: str, as_json: bool) -> None:
    """Show a commit's details."""
    c = app.client.inspect_commit(repo, ref)
    if as_json:
        return app.out.json(c)
    app.out.fields(
        [
            ("Commit", f"{c.repo}@{c.id}"),
            ("Branch", c.branch or "-"),
            ("Parent", c.parent or "<none>"),
            ("Children", ", ".join(c.children) or "-"),
            ("Started", ago(c.started)),
            ("Finished", ago(c.finished) if c.finished else "open"),
            ("Duration", commit_duration(c)),
            ("Size", size(c.size)),
            ("Description", c.description),
            ("Provenance", ", ".join(f"{p.repo}@{p.id}" for p in c.provenance) or "-"),
        ]
    )


@click.command("delete-commit")
@click.argument("repo")
@click.argument("ref")
@pass_app
def delete_commit(app: App, repo: str, ref: str) -> None:
    """Delete a commit: children and branch heads move to its parent; commits derived from it
    are deleted too."""
    app.client.delete_commit(repo, ref)


@click.command("subscribe-commit")
@click.argument("repo")
@click.argument("branch")
@click.option("--from", "since", help="Only commits after this one.")
@click.option("--new", "new_only", is_flag=True, help="Only commits finished from now on.")
@json_option
@pass_app
def subscribe_commit(app: App, repo: str, branch: str, since: str | None, new_only: bool, as_json: bool) -> None:
    """Print each commit finished on BRANCH, oldest first, and keep waiting for new ones."""
    if not as_json:
        app.out.line("\t".join(HEADERS), flush=True)
    for c in app.client.subscribe_commit(repo, branch, since, new_only):
        if as_json:
            app.out.json(c, flush=True)
        else:
            app.out.line("\t".join(commit_row(c)), flush=True)
