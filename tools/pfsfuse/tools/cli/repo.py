"""Repo verbs: create-repo, update-repo, list-repo, inspect-repo, delete-repo."""

from __future__ import annotations

import click

from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.app import App, json_option, pass_app


@click.command("create-repo")
@click.argument("name")
@click.option("-d", "--description", default="", help="A description of the repo.")
@pass_app
def create_repo(app: App, name: str, description: str) -> None:
    """Create a new repo."""
    app.client.create_repo(name, description)


@click.command("update-repo")
@click.argument("name")
@click.option("-d", "--description", default="", help="A new description of the repo.")
@pass_app
def update_repo(app: App, name: str, description: str) -> None:
    """Update a repo's description."""
    app.client.create_repo(name, description, update=True)


@click.command("list-repo")
@click.option("-a", "--all", "show_all", is_flag=True, help="Also list pipelines' datum repos (__PIPELINE).")
@json_option
@pass_app
def list_repo(app: App, show_all: bool, as_json: bool) -> None:
    """List repos: NAME CREATED SIZE (size of the head of master)."""
    views.list_repo(app.client, app.out, show_all, as_json)


@click.command("inspect-repo")
@click.argument("name")
@json_option
@pass_app
def inspect_repo(app: App, name: str, as_json: bool) -> None:
    """Show a repo's details."""
    views.inspect_repo(app.client, app.out, name, as_json)


@click.command("delete-repo")
@click.argument("name", required=False)
@click.option("-f", "--force", is_flag=True, help="Delete even if other repos depend on it.")
@click.option("--all", "all_", is_flag=True, help="Delete every repo.")
@pass_app
def delete_repo(app: App, name: str | None, force: bool, all_: bool) -> None:
    """Delete a repo (its commits and branches), or all repos with --all."""
    if all_ == (name is not None):
        raise click.UsageError("give either a repo name or --all")
    if all_:
        for r in app.client.list_repo():
            app.client.delete_repo(r.name, force=True)
    elif name is not None:
        app.client.delete_repo(name, force=force)
