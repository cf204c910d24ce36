"""Repo verbs: create-repo, update-repo, list-repo, inspect-repo, delete-repo."""

from __future__ import annotations

import click

from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import ago, size


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
    repos = [r for r in app.client.list_repo() if show_all or not r.name.startswith("__")]
    if as_json:
        return app.out.json(repos)
    app.out.table(["NAME", "CREATED", "SIZE"], ([r.name, ago(r.created), size(r.size)] for r in repos))


@click.command("inspect-repo")
@click.argument("name")
@json_option
@pass_app
def inspect_repo(app: App, name: str, as_json: bool) -> None:
    """Show a repo's details."""
    r = app.client.inspect_repo(name)
    if as_json:
        return app.out.json(r)
    app.out.fields(
        [
            ("Name", r.name),
            ("Description", r.description),
            ("Created", ago(r.created)),
            ("Size", size(r.size)),
            ("Branches", ", ".join(r.branches) or "-"),
        ]
    )


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
