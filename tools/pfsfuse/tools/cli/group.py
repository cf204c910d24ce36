"""The `pfs` command's click group: its verbs, and errors turned into one line. (The entry point,
main.py, runs the common read-only verbs without it when it can: lite.py.)"""

from __future__ import annotations

import importlib
import os

import click

from pfsfuse.metadata.errors import PfsError
from pfsfuse.tools.cli.app import App
from pfsfuse.tools.cli.output import oserror_message

# The verbs of each module of pfsfuse.tools.cli, in help order (grouped by topic, like pachctl's).
# A module is imported only when one of its verbs runs, or `--help` lists them all: importing
# every verb's dependencies would take longer than most commands do. Verb `do-x` is `do_x` there.
VERBS = {
    "repo": ["create-repo", "update-repo", "list-repo", "inspect-repo", "delete-repo"],
    "commit": ["start-commit", "finish-commit", "list-commit", "inspect-commit", "delete-commit", "subscribe-commit"],
    "branch": ["create-branch", "set-branch", "list-branch", "delete-branch"],
    "file": [
        "put-file",
        "put-header",
        "put-footer",
        "get-file",
        "list-file",
        "inspect-file",
        "glob-file",
        "diff-file",
        "delete-file",
        "copy-file",
    ],
    "mount": ["mount", "unmount"],
    "pipeline": [
        "create-pipeline",
        "update-pipeline",
        "edit-pipeline",
        "extract-pipeline",
        "inspect-pipeline",
        "list-pipeline",
        "delete-pipeline",
        "stop-pipeline",
        "start-pipeline",
        "list-job",
        "inspect-job",
        "stop-job",
        "delete-job",
        "flush-job",
        "flush-commit",
        "list-datum",
        "inspect-datum",
        "restart-datum",
        "get-logs",
    ],
    "objects": ["get-object", "get-tag"],
    "data": ["extract", "restore"],
    "auth": ["auth"],
    "deploy": ["deploy", "undeploy", "port-forward"],
    "admin": [
        "serve",
        "console",
        "shutdown",
        "inspect-cluster",
        "delete-all",
        "fsck",
        "garbage-collect",
        "version",
        "bench",
    ],
}
_MODULE = {verb: module for module, verbs in VERBS.items() for verb in verbs}


class _Group(click.Group):
    def list_commands(self, ctx):
        return list(_MODULE)

    def get_command(self, ctx, name):
        if name not in _MODULE:
            return None
        module = importlib.import_module(f"pfsfuse.tools.cli.{_MODULE[name]}")
        return getattr(module, name.replace("-", "_"))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PfsError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            if isinstance(e, BrokenPipeError):
                raise
            raise click.ClickException(oserror_message(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """pfs: Git for data, mounted as a file system (pachctl 1.7 verbs).

    Talks to the daemon at $PFS_ADDRESS (or $ADDRESS, pachctl's name), or to the local one for
    $PFS_HOME (default ~/.pfs), starting it when it is not running.
    """
    if os.environ.get("ADDRESS") and not os.environ.get("PFS_ADDRESS"):
        os.environ["PFS_ADDRESS"] = os.environ["ADDRESS"]  # pachctl 1.7's name (PFS_ADDRESS wins)
    app = ctx.obj = App()
    ctx.call_on_close(app.close)
