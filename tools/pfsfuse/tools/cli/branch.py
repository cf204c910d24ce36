"""Branch verbs: create-branch, set-branch, list-branch, delete-branch."""

from __future__ import annotations

import click

from pfsfuse.metadata import refs
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.metadata.records import BranchRef
from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.app import App, json_option, pass_app


def _branch_ref(text: str) -> BranchRef:
    found = refs.split(text)  # the parser the SDK uses; the daemon checks that the name is a branch's
    if found is None or found[2] is not None:
        raise InvalidArgument(f"invalid provenance {text!r}: expected REPO@BRANCH")
    return BranchRef(found[0], found[1])


@click.command("create-branch")
@click.argument("repo")
@click.argument("branch")
@click.option("--head", help="The commit the branch points at (an id or ref, e.g. staging^1).")
@click.option("-p", "--provenance", multiple=True, help="REPO@BRANCH this branch derives from (repeatable).")
@pass_app
def create_branch(app: App, repo: str, branch: str, head: str | None, provenance: tuple[str, ...]) -> None:
    """Create a branch, or move an existing one to --head."""
    prov = [_branch_ref(p) for p in provenance] if provenance else None
    app.client.create_branch(repo, branch, head, prov)


@click.command("set-branch")
@click.argument("repo")
@click.argument("commit")
@click.argument("branch")
@pass_app
def set_branch(app: App, repo: str, commit: str, branch: str) -> None:
    """Point BRANCH at COMMIT (1.7's older form of create-branch --head)."""
    app.client.create_branch(repo, branch, commit)


@click.command("list-branch")
@click.argument("repo")
@json_option
@pass_app
def list_branch(app: App, repo: str, as_json: bool) -> None:
    """List a repo's branches: BRANCH HEAD."""
    views.list_branch(app.client, app.out, repo, as_json)


@click.command("delete-branch")
@click.argument("repo")
@click.argument("branch")
@click.option("-f", "--force", is_flag=True, help="Delete even if other branches derive from it.")
@pass_app
def delete_branch(app: App, repo: str, branch: str, force: bool) -> None:
    """Delete a branch (its commits stay)."""
    app.client.delete_branch(repo, branch, force)
