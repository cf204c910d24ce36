"""The common verbs start fast: they import none of the heavy modules (checked in the real
command's process, not timed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What the daemon, the mount and the SDK need, and a read-only verb must not pay for.
HEAVY = [
    "rich",
    "trio",
    "rocksdict",
    "pyfuse3",
    "starlette",
    "httpx",
    "boto3",
    "botocore",
    "kubernetes",
    "fsspec",
    "yaml",
    "zstandard",
    "pyfastcdc",
    "asyncio",
    "ssl",
    "http.client",
    "concurrent.futures",
    "pfsfuse.store",
    "pfsfuse.engine",
    "pfsfuse.mount",
    "pfsfuse.chunks.packs",
    "pfsfuse.sdk",
]
# Listing repos reads no trees.
HEAVY_FOR_LIST_REPO = [*HEAVY, "pfsfuse.metadata.tree", "pfsfuse.metadata.glob"]

_PROBE = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["pfs", *sys.argv[1:]]
from pfsfuse.tools.cli.main import main
main()
"""


def _modules(env, *args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [line] = [s for s in r.stderr.splitlines() if s.startswith("MODULES ")]
    return set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize(
    "args, heavy", [(["--help"], HEAVY), (["list-repo"], HEAVY_FOR_LIST_REPO), (["version"], HEAVY_FOR_LIST_REPO)]
)
def test_common_verbs_import_no_heavy_modules(daemon, args, heavy):
    loaded = _modules(daemon.env, *args)
    assert "pfsfuse.tools.cli.main" in loaded  # the probe ran the command
    assert [m for m in heavy if m in loaded] == []
