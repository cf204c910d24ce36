"""Commit verbs: start-commit, finish-commit, list-commit, inspect-commit, delete-commit,
subscribe-commit."""

from __future__ import annotations

import click

from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.views import COMMIT_HEADERS, commit_row


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
    views.list_commit(app.client, app.out, repo, ref, number, since, as_json)


@click.command("inspect-commit")
@click.argument("repo")
@click.argument("ref")
@json_option
@pass_app
def inspect_commit(app: App, repo: str, ref: str, as_json: bool) -> None:
    """Show a commit's details."""
    views.inspect_commit(app.client, app.out, repo, ref, as_json)


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
        app.out.line("\t".join(COMMIT_HEADERS), flush=True)
    for c in app.client.subscribe_commit(repo, branch, since, new_only):
        if as_json:
            app.out.json(c, flush=True)
        else:
            app.out.line("\t".join(commit_row(c)), flush=True)
