"""What a pipeline's command can reach: its environment holds the documented variables and the
spec's, never the daemon's token, PFS_HOME or object-store credentials."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import PFS, Daemon


def test_a_command_gets_a_clean_environment(tmp_home, tmp_path):
    secrets = {"AWS_SECRET_ACCESS_KEY": "daemon-secret", "PFS_AUTH_TOKEN": "pfs_daemons_own", "SOMETHING": "else"}
    d = Daemon(tmp_home / "home")
    client_env = dict(d.env)
    d.env.update(secrets)  # the daemon's, and so its workers'
    d.start()

    def pfs(*args: str) -> str:
        return subprocess.run([PFS, *args], env=client_env, capture_output=True, check=True).stdout.decode()

    try:
        pfs("create-repo", "data")
        pfs("put-file", "data", "master", "a", "-f", "/dev/null")
        spec = tmp_path / "p.json"
        spec.write_text(
            json.dumps(
                {
                    "pipeline": {"name": "show"},
                    "transform": {"cmd": ["sh"], "stdin": ["env | sort"], "env": {"MINE": "yes"}},
                    "input": {"atom": {"repo": "data", "glob": "/"}},
                }
            )
        )
        pfs("create-pipeline", "-f", str(spec))
        pfs("flush-commit", "data@master")
        out = pfs("get-logs", "-p", "show")
        assert "MINE=yes" in out and "PACH_JOB_ID=" in out and "PFS_ROOT=" in out, out
        for leak in ("daemon-secret", "pfs_daemons_own", "SOMETHING", "PFS_HOME", "PFS_ADDRESS"):
            assert leak not in out, (leak, out)
    finally:
        d.stop()
        d.kill()


def test_a_pipeline_whose_workers_cannot_start_fails_its_job_instead_of_hanging(tmp_home, tmp_path):
    # A broken Python environment on the workers' side: every worker exits as it starts.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "if sys.argv[:1] == ['-m']:  # the workers (python -m ...), not the daemon or the CLI\n"
        "    sys.exit('ModuleNotFoundError: no module named numpy')\n"
    )
    d = Daemon(tmp_home / "home")
    client_env = dict(d.env)
    d.env["PYTHONPATH"] = str(site)
    d.start()

    def pfs(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([PFS, *args], env=client_env, capture_output=True, check=check, timeout=120)

    try:
        pfs("create-repo", "data")
        pfs("put-file", "data", "master", "a", "-f", "/dev/null")
        spec = tmp_path / "p.json"
        spec.write_text(
            json.dumps(
                {
                    "pipeline": {"name": "never"},
                    "transform": {"cmd": ["true"]},
                    "input": {"atom": {"repo": "data", "glob": "/*"}},
                }
            )
        )
        pfs("create-pipeline", "-f", str(spec))
        pfs("flush-commit", "data@master", check=False)  # returns: the job ended
        job = json.loads(pfs("list-job", "-p", "never", "--json").stdout)[0]
        assert job["state"] == "failure", job
        assert "numpy" in json.dumps(job), job
        info = pfs("inspect-pipeline", "never").stdout.decode()
        assert "crashing" in info and "numpy" in info, info
    finally:
        d.stop()
        d.kill()


@pytest.fixture
def strict(tmp_home):
    """A daemon as an operator runs it by default: commands never run as root."""
    d = Daemon(tmp_home / "home")
    for name in ("PFS_PIPELINE_USER", "PFS_ALLOW_ROOT_COMMANDS"):  # the suite's (conftest.py)
        d.env.pop(name, None)
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _pipeline(tmp_path, name: str, transform: dict) -> str:
    spec = tmp_path / f"{name}.json"
    spec.write_text(
        json.dumps(
            {"pipeline": {"name": name}, "transform": transform, "input": {"atom": {"repo": "data", "glob": "/"}}}
        )
    )
    return str(spec)


def test_commands_run_unprivileged_and_cannot_read_the_store_or_the_host_secrets(strict, tmp_path):
    daemon = strict
    daemon.pfs("create-repo", "data")
    daemon.pfs("put-file", "data", "master", "a", input=b"x")
    pid = (daemon.home / "daemon.pid").read_text().split()[0]
    stores = [daemon.home / "store.json", daemon.home / "index" / "CURRENT", f"/proc/{pid}/environ", "/etc/shadow"]
    probe = [f"if cat {p} >/dev/null 2>&1; then echo READ {p}; else echo DENIED {p}; fi" for p in stores]
    daemon.pfs(
        "create-pipeline",
        "-f",
        _pipeline(
            tmp_path,
            "probe",
            {
                "cmd": ["sh"],
                "stdin": ["id -u; id -g", *probe, "cp /pfs/data/a /pfs/out/a", "ln /pfs/data/a /pfs/out/b"],
            },
        ),
    )
    daemon.pfs("flush-commit", "data@master")
    logs = daemon.pfs("get-logs", "-p", "probe").stdout.decode()
    assert "READ" not in logs and logs.count("DENIED") == len(stores), logs
    nobody = pwd.getpwnam("nobody")
    said = [line.split()[-1] for line in logs.splitlines()]  # after get-logs' pipeline, job and datum
    assert said[:2] == [str(nobody.pw_uid), str(nobody.pw_gid)], logs
    assert daemon.pfs("get-file", "probe", "master", "a").stdout == b"x"  # /pfs/out is the command's
    assert daemon.pfs("get-file", "probe", "master", "b").stdout == b"x"  # and it may link its inputs there


def test_transform_user_sets_uid_gid_and_groups_and_root_needs_the_operator(strict, tmp_path):
    daemon = strict
    daemon.pfs("create-repo", "data")
    daemon.pfs("put-file", "data", "master", "a", input=b"x")
    user = pwd.getpwnam("daemon")
    daemon.pfs(
        "create-pipeline", "-f", _pipeline(tmp_path, "as-daemon", {"cmd": ["sh"], "stdin": ["id"], "user": "daemon"})
    )
    daemon.pfs("flush-commit", "data@master")
    logs = daemon.pfs("get-logs", "-p", "as-daemon").stdout.decode()
    groups = sorted(os.getgrouplist("daemon", user.pw_gid))
    assert f"uid={user.pw_uid}(daemon) gid={user.pw_gid}" in logs, logs
    assert sorted(int(g.split("(")[0]) for g in logs.split("groups=")[1].split()[0].split(",")) == groups, logs
    for user_, message in (
        ("root", "may not run as root"),
        ("no-such-user", "no user 'no-such-user'"),
        ("a:b:c", "expected"),
    ):
        r = daemon.pfs("create-pipeline", "-f", _pipeline(tmp_path, "bad", {"cmd": ["id"], "user": user_}), check=False)
        assert r.returncode != 0 and message in r.stderr.decode() and b"Traceback" not in r.stderr, r.stderr


def test_the_workers_of_all_pipelines_are_bounded_per_machine(tmp_home, tmp_path):
    d = Daemon(tmp_home / "home")
    d.env["PFS_MAX_WORKERS"] = "3"
    d.start()
    try:
        d.pfs("create-repo", "data")
        for name in ("first", "second"):  # two workers each
            spec = {"pipeline": {"name": name}, "transform": {"cmd": ["true"]}, "parallelism_spec": {"constant": 2}}
            spec["input"] = {"atom": {"repo": "data", "glob": "/"}}
            (tmp_path / f"{name}.json").write_text(json.dumps(spec))
        d.pfs("create-pipeline", "-f", str(tmp_path / "first.json"))
        r = d.pfs("create-pipeline", "-f", str(tmp_path / "second.json"), check=False)
        assert r.returncode != 0 and b"at most 3 (pfs serve --max-workers)" in r.stderr, r.stderr
        d.pfs("delete-pipeline", "first")
        d.pfs("create-pipeline", "-f", str(tmp_path / "second.json"))  # room again
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def test_whether_the_command_user_can_run_a_program_follows_the_kernels_checks():
    from pfsfuse.scheduler.identity import RunAs, can_run

    nobody = pwd.getpwnam("nobody")
    who = RunAs(nobody.pw_uid, nobody.pw_gid, (), "")
    top = Path(tempfile.mkdtemp(dir="/tmp"))  # (pytest's own tmp_path is under a private directory)
    try:
        top.chmod(0o755)
        private = top / "home"  # a home only its owner enters, as /root: a Python installed there
        (private / "bin").mkdir(parents=True)
        program = private / "bin" / "python3"
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        link = top / "venv-python3"
        link.symlink_to(program)
        private.chmod(0o700)
        assert not can_run(who, str(link)), "a link into a private directory is followed"
        private.chmod(0o711)
        assert can_run(who, str(link))
        program.chmod(0o744)
        assert not can_run(who, str(program))
        os.chown(program, nobody.pw_uid, nobody.pw_gid)
        assert can_run(who, str(program))
        assert not can_run(who, str(top / "missing"))
    finally:
        shutil.rmtree(top)
