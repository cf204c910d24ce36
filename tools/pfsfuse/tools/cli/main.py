"""Entry point of the `pfs` command: the group, its verbs, and errors turned into one line."""

from __future__ import annotations

import click

from pfsfuse.metadata.errors import PfsError
from pfsfuse.tools.cli import admin, branch, commit, data, file, mount, pipeline, repo
from pfsfuse.tools.cli.app import App


class _Group(click.Group):
    def list_commands(self, ctx):  # in the order added: grouped by topic, like pachctl's help
        return list(self.commands)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PfsError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            if isinstance(e, BrokenPipeError):
                raise
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """pfs: Git for data, mounted as a file system (pachctl 1.7 verbs).

    Talks to the daemon at $PFS_ADDRESS, or to the local one for $PFS_HOME (default ~/.pfs),
    starting it when it is not running.
    """
    app = ctx.obj = App()
    ctx.call_on_close(app.close)


for module in (repo, commit, branch, file, mount, pipeline, data, admin):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="pfs")


if __name__ == "__main__":
    main()
