from __future__ import annotations

import pytest
from click.testing import CliRunner

from pfsfuse.tools.cli.group import cli


class Pfs:
    """The CLI in-process (click's runner) against a real daemon."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.runner = CliRunner()

    def __call__(self, *args: str, input: bytes | str | None = None, ok: bool = True):
        r = self.runner.invoke(
            cli,
            list(args),
            input=input,
            env=self.daemon.env,
            catch_exceptions=False,
        )
        if ok:
            assert r.exit_code == 0, f"pfs {' '.join(args)} -> {r.exit_code}: {r.output}"
        else:
            assert r.exit_code != 0, f"pfs {' '.join(args)} should have failed: {r.output}"
        return r


@pytest.fixture
def pfs(daemon) -> Pfs:
    return Pfs(daemon)
