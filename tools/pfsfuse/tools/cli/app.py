"""The object every command gets in `ctx.obj`: a lazily connected client and the output."""

from __future__ import annotations

import click

from pfsfuse.api.connect import connect
from pfsfuse.api.remote import RemoteClient
from pfsfuse.metadata import refs
from pfsfuse.tools.cli.output import Output


class App:
    def __init__(self):
        self._client: RemoteClient | None = None
        self._pipelines = None
        self._auth = None
        self.out = Output()

    @property
    def client(self) -> RemoteClient:
        if self._client is None:
            self._client = connect()
        return self._client

    @property
    def pipelines(self):
        """The pipeline API of the daemon `client` talks to."""
        if self._pipelines is None:
            from pfsfuse.scheduler.api import RemotePipelines  # only pipeline verbs need it

            self._pipelines = RemotePipelines(self.client.address, self.client.token)
        return self._pipelines

    @property
    def auth(self):
        """The auth API of the daemon `client` talks to."""
        if self._auth is None:
            from pfsfuse.api.auth import RemoteAuth  # only auth verbs need it

            self._auth = RemoteAuth(self.client.address, self.client.token)
        return self._auth

    def close(self) -> None:
        for api in (self._client, self._pipelines, self._auth):
            if api is not None:
                api.close()


pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class RefPathCommand(click.Command):
    """A command whose REPO REF [PATH] arguments may also be given as one `repo@ref:path`.

    Before click parses them, such a word where a repo argument is due (a parameter named `repo`
    or `*_repo`) is spread over that argument and the ones after it; option values and other
    arguments are left alone."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", "REPO REF [PATH] may also be written REPO@REF[:PATH].")
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._spread(args))

    def _spread(self, args: list[str]) -> list[str]:
        valued = {
            opt
            for p in self.params
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for opt in p.opts + p.secondary_opts
        }
        positional = [p.name for p in self.params if isinstance(p, click.Argument)]
        out, k, only_args, skip = [], 0, False, False
        for word in args:
            if skip:
                out.append(word)
                skip = False
                continue
            if not only_args and word.startswith("-") and word != "-":
                only_args = word == "--"
                skip = word in valued
                out.append(word)
                continue
            name = positional[k] if k < len(positional) else ""
            # repo@ref[:path], read as the SDK reads it (the ref may carry ancestry: master^2)
            m = refs.split(word) if name == "repo" or name.endswith("_repo") else None
            parts = [word] if m is None else [m[0], m[1]] + ([m[2]] if m[2] is not None else [])
            out += parts
            k += len(parts)
        return out
