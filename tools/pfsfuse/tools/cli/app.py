"""The object every command gets in `ctx.obj`: a lazily connected client and the output."""

from __future__ import annotations

import click

from pfsfuse.api.client import Client
from pfsfuse.api.connect import connect
from pfsfuse.tools.cli.output import Output


class App:
    def __init__(self):
        self._client: Client | None = None
        self._pipelines = None
        self.out = Output()

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect()
        return self._client

    @property
    def pipelines(self):
        """The pipeline API of the daemon `client` talks to."""
        if self._pipelines is None:
            from pfsfuse.scheduler.api import RemotePipelines  # only pipeline verbs need it

            self._pipelines = RemotePipelines(self.client.address)
        return self._pipelines

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._pipelines is not None:
            self._pipelines.close()


pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
