"""The common verbs start fast: they import none of the heavy modules (checked in the real
command's process, not timed)."""

from __future__ import annotations

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
import atexit, sys
atexit.register(lambda: sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n"))
sys.argv = ["pfs", *sys.argv[1:]]
from pfsfuse.tools.cli.main import main
main()
"""


def _modules(env, *args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [line] = [s for s in r.stderr.splitlines() if s.startswith("MODULES ")]
    return set(line.removeprefix("MODULES ").split())


@pytest.mark.parametrize("args, heavy", [(["--help"], HEAVY), (["inspect-cluster"], HEAVY_FOR_LIST_REPO)])
def test_common_verbs_import_no_heavy_modules(daemon, args, heavy):
    loaded = _modules(daemon.env, *args)
    assert "pfsfuse.tools.cli.main" in loaded  # the probe ran the command
    assert [m for m in heavy if m in loaded] == []


# The light path (tools/cli/lite.py) does without the click CLI and the full client too, without
# trees or globs, and without socket.py, urllib or the json package's Python layer.
LIGHT_HEAVY = [
    *HEAVY_FOR_LIST_REPO,
    *("click", "msgspec", "h11", "pfsfuse.api.remote", "pfsfuse.metadata.records", "typing", "socket", "urllib"),
]
# Without `--json` (the json package) or a REPO@REF word (its parser's regular expressions), not
# even re and enum.
LIGHT_PLAIN = [*LIGHT_HEAVY, "json", "re", "enum"]


@pytest.mark.parametrize(
    "args, heavy",
    [
        (["list-repo"], LIGHT_PLAIN),
        (["version"], LIGHT_PLAIN),
        (["inspect-repo", "r"], LIGHT_PLAIN),
        (["list-branch", "r"], LIGHT_PLAIN),
        (["list-commit", "r", "-n", "1"], LIGHT_PLAIN),
        (["list-file", "r", "master"], LIGHT_PLAIN),
        (["inspect-file", "r", "master", "f"], LIGHT_PLAIN),
        (["get-file", "r", "master", "f"], LIGHT_PLAIN),
        (["list-job"], LIGHT_PLAIN),
        (["list-pipeline"], LIGHT_PLAIN),
        (["list-repo", "--json"], LIGHT_HEAVY),
        (["inspect-commit", "r", "master", "--json"], LIGHT_HEAVY),
        (["list-file", "r@master"], LIGHT_HEAVY),
        (["get-file", "r@master:f"], LIGHT_HEAVY),
    ],
)
def test_the_light_verbs_import_neither_click_nor_the_full_client(daemon, args, heavy):
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "r", "master", "f", input=b"data")
    loaded = _modules(daemon.env, *args)
    assert "pfsfuse.tools.cli.lite" in loaded  # the probe ran the command
    assert [m for m in heavy if m in loaded] == []
