"""The light path of the common read-only verbs (tools/cli/lite.py) prints what the click CLI
prints: the same stdout, stderr and exit status on the same store, errors included; and it is
taken (the real `pfs` command's process never imports click), or left to the full CLI where it
must be."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import msgspec
import pytest

from pfsfuse.api import lite, types
from pfsfuse.metadata import records
from pfsfuse.scheduler import records as pps_records
from pfsfuse.scheduler import spec
from pfsfuse.tools.cli.lite import GET_MAX

# The `pfs` console script's entry point, noting at exit whether the full (click) CLI ran.
_LIGHT = """
import atexit, os, sys
atexit.register(lambda: open(os.environ["PROBE_OUT"], "w").write("full" if "click" in sys.modules else "light"))
sys.argv = ["pfs", *sys.argv[1:]]
from pfsfuse.tools.cli.main import main
main()
"""
# The click CLI alone, as it ran before the light path existed.
_FULL = "import sys; from pfsfuse.tools.cli.group import cli; cli(sys.argv[1:], prog_name='pfs')"


def _run(env, code: str, args, tmp_path) -> tuple[tuple[bytes, bytes, int], str]:
    probe = tmp_path / "probe"
    probe.unlink(missing_ok=True)
    r = subprocess.run(
        [sys.executable, "-c", code, *args], env={**env, "PROBE_OUT": str(probe)}, capture_output=True, timeout=120
    )
    return (r.stdout, r.stderr, r.returncode), probe.read_text() if probe.exists() else ""


def _same(env, args, tmp_path, path="light") -> tuple[bytes, bytes, int]:
    """Run `pfs ARGS` both ways; assert the same output and status, and which path the real
    command took. The "N seconds ago" of a table moves with the clock: a full run is compared
    with the light runs just before and after it, one of which shares its second."""
    for _ in range(3):
        before, taken = _run(env, _LIGHT, args, tmp_path)
        assert taken == path, f"pfs {' '.join(args)} took the {taken} path"
        full, _ = _run(env, _FULL, args, tmp_path)
        after, _ = _run(env, _LIGHT, args, tmp_path)
        if full in (before, after):
            return full
    assert before == full, f"pfs {' '.join(args)}: the light path differs from the click CLI"
    raise AssertionError("unreachable")


@pytest.fixture
def store(daemon, tmp_path):
    """A repo with two commits: files, a directory with a mode and owner kept, a symlink, a
    non-ASCII name, a user extended attribute, an open commit on another branch."""
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(local / "sub" / "script.sh", 0o755)
    with contextlib.suppress(OSError):  # (where the scratch directory keeps user attributes)
        os.setxattr(local / "sub" / "script.sh", "user.origin", "ñ://x".encode())
    (local / "sub" / "link").symlink_to("script.sh")
    daemon.pfs("create-repo", "images", "-d", "photos, 日本")
    daemon.pfs("put-file", "images", "master", "a.txt", input=b"first\n")
    daemon.pfs("put-file", "images", "master", "-r", "-f", str(local / "sub"), "sub")
    daemon.pfs("put-file", "images", "master", "ñandú.txt", input=b"x" * 5000)
    daemon.pfs("create-repo", "empty")
    daemon.pfs("start-commit", "images", "dev")
    return daemon


LIGHT_CASES = [
    ["list-repo"],
    ["list-repo", "--json"],
    ["list-repo", "-a"],
    ["inspect-repo", "images"],
    ["inspect-repo", "images", "--json"],
    ["list-branch", "images"],
    ["list-branch", "--json", "images"],
    ["list-commit", "images"],
    ["list-commit", "images", "master", "-n", "1"],
    ["list-commit", "images", "--number=1", "--json"],
    ["list-commit", "empty"],
    ["inspect-commit", "images", "master"],
    ["inspect-commit", "images", "master^1", "--json"],
    ["inspect-commit", "images", "dev"],
    ["inspect-commit", "images", "dev", "--json"],
    ["list-file", "images", "master"],
    ["list-file", "images@master:sub"],
    ["list-file", "images", "master", "--json"],
    ["list-file", "images", "master", "--history", "all"],
    ["inspect-file", "images", "master", "sub/script.sh"],
    ["inspect-file", "images", "master", "sub/script.sh", "--json"],
    ["list-file", "images@master:sub", "--json"],
    ["inspect-file", "images@master:sub/link", "--json"],
    ["inspect-file", "images", "master", "sub"],
    ["inspect-file", "images", "master", "ñandú.txt"],
    ["get-file", "images", "master", "a.txt"],
    ["get-file", "images@master:ñandú.txt"],
    ["get-file", "images", "master", "sub/*"],
    ["get-file", "images", "master", "sub"],
    ["get-file", "images", "master", "sub/link"],
    ["list-job"],
    ["list-job", "--json"],
    ["list-job", "-p", "images"],
    ["version"],
    ["version", "--client-only"],
    # errors: one line on stderr and status 1, as the daemon words them
    ["inspect-repo", "nope"],
    ["inspect-repo", "bad name!"],
    ["list-branch", "nope"],
    ["list-commit", "images", "nosuch"],
    ["inspect-commit", "images", "master^9"],
    ["list-file", "images", "nosuch"],
    ["list-file", "images", "master", "missing"],
    ["inspect-file", "images", "master", "missing"],
    ["get-file", "images", "master", "missing"],
    ["get-file", "images", "master", "../x"],
    ["get-file", "images", "nosuch", "a.txt"],
    ["get-file", "nope", "master", "a.txt"],
    ["get-file", "images", "master", "zz*"],
    ["list-job", "--pipeline", "nope"],
    ["auth", "whoami"],
]


@pytest.mark.parametrize("args", LIGHT_CASES, ids=" ".join)
def test_the_light_path_prints_what_click_prints(store, tmp_path, args):
    out, err, code = _same(store.env, args, tmp_path)
    if "--json" in args:
        msgspec.json.decode(out)  # JSON indeed
    assert code == (1 if err else 0) and (not err or (err.startswith(b"Error: ") and err.count(b"\n") == 1))


FULL_CASES = [
    ["list-repo", "--help"],
    ["list-repo", "--bogus"],
    ["inspect-repo"],
    ["inspect-repo", "a", "b"],
    ["list-commit", "images", "-n", "-1"],
    ["list-commit", "images", "-n"],
    ["list-file", "images", "master", "--history", "0"],
    ["get-file", "images", "master", "a.txt", "-o", "/nonexistent/dir/out"],
    ["list-repo", "--", "x"],
    ["list-job", "-i", "images@master"],
]


@pytest.mark.parametrize("args", FULL_CASES, ids=" ".join)
def test_what_the_light_path_does_not_know_goes_to_click(store, tmp_path, args):
    _same(store.env, args, tmp_path, path="full")


def test_a_daemon_not_answering_goes_to_click(daemon, tmp_path):
    env = {**daemon.env, "PFS_ADDRESS": f"unix:{tmp_path}/none.sock"}
    out, err, code = _same(env, ["list-repo"], tmp_path, path="full")
    assert code == 1 and b"cannot reach the pfs daemon" in err


def test_a_damaged_client_json_or_tcp_goes_to_click(daemon, tmp_path):
    for damaged in (b'{"token": 5}', b"[]", b"{", b"\xff"):
        (daemon.home / "client.json").write_bytes(damaged)
        out, err, code = _same(daemon.env, ["list-repo"], tmp_path, path="full")
        assert code == 1 and b"is damaged" in err
    (daemon.home / "client.json").unlink()
    _same({**daemon.env, "PFS_ADDRESS": "127.0.0.1:1"}, ["list-repo"], tmp_path, path="full")


def test_with_auth_the_light_path_sends_the_kept_token_or_pfs_auth_token(daemon, tmp_path):
    daemon.pfs("auth", "activate", "--admins=admin")  # logs this home's client in: client.json
    daemon.pfs("create-repo", "r")
    for args in (["auth", "whoami"], ["auth", "whoami", "--json"], ["list-repo"], ["inspect-repo", "r"]):
        out, err, code = _same(daemon.env, args, tmp_path)
        assert code == 0, err
    assert b'You are "admin"' in _same(daemon.env, ["auth", "whoami"], tmp_path)[0]
    # a token in the environment wins over the kept one
    bad = {**daemon.env, "PFS_AUTH_TOKEN": "not-a-token"}
    for args in (["auth", "whoami"], ["list-repo"], ["get-file", "r", "master", "f"]):
        out, err, code = _same(bad, args, tmp_path)
        assert code == 1 and err.startswith(b"Error: ")


def test_a_big_file_is_read_by_the_full_client(daemon, tmp_path):
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "r", "master", "big", input=os.urandom(GET_MAX))
    out, _, _ = _same(daemon.env, ["get-file", "r", "master", "big"], tmp_path, path="full")
    assert len(out) == GET_MAX


def test_pipelines_and_jobs_print_alike(daemon, tmp_path):
    daemon.pfs("create-repo", "in")
    daemon.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
    copy = {"cmd": ["sh"], "stdin": ["cp -r /pfs/in/* /pfs/out/ || true"]}
    atom = {"atom": {"repo": "in", "glob": "/*"}}
    specs = [
        {"pipeline": {"name": "one"}, "transform": copy, "input": atom},
        {
            "pipeline": {"name": "two"},
            "transform": copy,
            "input": {"cross": [atom, {"pfs": {"repo": "one", "glob": "/", "name": "o"}}]},
            "output_branch": "out",
        },
        {"pipeline": {"name": "three"}, "transform": copy, "input": {"union": [atom, atom]}, "datum_tries": 1},
    ]
    (tmp_path / "specs.json").write_text("".join(json.dumps(s) for s in specs))
    daemon.pfs("create-pipeline", "-f", str(tmp_path / "specs.json"))
    head = json.loads(daemon.pfs("inspect-commit", "in", "master", "--json").stdout)["id"]
    daemon.pfs("flush-commit", f"in@{head}")  # the jobs are done: their rows stay as they are
    daemon.pfs("stop-pipeline", "three")
    for args in (
        ["list-pipeline"],
        ["list-pipeline", "--json"],
        ["list-pipeline", "--spec"],
        ["list-job"],
        ["list-job", "-p", "two", "--json"],
    ):
        out, err, code = _same(daemon.env, args, tmp_path)
        assert code == 0 and out.count(b"\n") > 1, err


@pytest.mark.parametrize(
    "light, struct",
    [
        (lite.RepoInfo, types.RepoInfo),
        (lite.Branch, records.Branch),
        (lite.Commit, records.Commit),
        (lite.FileInfo, types.FileInfo),
        (lite.JobInfo, pps_records.JobInfo),
        (lite.PipelineInfo, pps_records.PipelineInfo),
        (lite.Input, spec.Input),
        (lite.AtomInput, spec.AtomInput),
        (lite.CronInput, spec.CronInput),
    ],
)
def test_the_light_records_default_as_the_structs_do(light, struct):
    wanted = {}
    for f in msgspec.structs.fields(struct):
        if f.required:
            continue
        default = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
        wanted[f.name] = msgspec.to_builtins(default)
    assert light.DEFAULTS == wanted


def test_a_pipeline_spec_defaults_as_its_struct_does():
    """(The light record fills in only the defaults the table reads.)"""
    defaults = {f.name: f.default for f in msgspec.structs.fields(spec.PipelineSpec)}
    assert all(defaults[name] == value for name, value in lite.PipelineSpec.DEFAULTS.items())
