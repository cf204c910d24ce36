"""What a pipeline's command can reach: its environment holds the documented variables and the
spec's, never the daemon's token, PFS_HOME or object-store credentials."""

from __future__ import annotations

import json
import subprocess

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
