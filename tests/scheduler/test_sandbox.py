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
