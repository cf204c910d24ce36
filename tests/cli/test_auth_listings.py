"""With auth active, listings show a non-admin only what they may read (repos, pipelines, jobs,
a flush's jobs), through the real `pfs` binary; admins see everything."""

from __future__ import annotations

import json
import subprocess

from helpers import PFS, Daemon, rows, wait_for


def _as(d: Daemon, token: str, *args: str) -> str:
    r = subprocess.run([PFS, *args], env={**d.env, "PFS_AUTH_TOKEN": token}, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def _names(out: str) -> list[str]:
    return sorted(row[0] for row in rows(out))


def _pipeline(d: Daemon, tmp, name: str, repo: str) -> None:
    spec = tmp / f"{name}.json"
    spec.write_text(
        json.dumps(
            {
                "pipeline": {"name": name},
                "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/*/. /pfs/out/ 2>/dev/null; true"]},
                "input": {"atom": {"repo": repo, "glob": "/"}},
            }
        )
    )
    d.pfs("create-pipeline", "-f", str(spec))


def test_listings_show_what_the_caller_may_read(daemon, tmp_path):
    d = daemon
    admin = d.pfs("auth", "activate", "--admins=admin").stdout.decode().split()[1]
    for repo in ("open", "closed"):
        d.pfs("create-repo", repo)
        d.pfs("put-file", repo, "master", "f", input=b"x")
    _pipeline(d, tmp_path, "seen", "open")
    _pipeline(d, tmp_path, "hidden", "closed")
    bob = next(
        line.split()[1]
        for line in d.pfs("auth", "get-auth-token", "bob").stdout.decode().splitlines()
        if "Token:" in line
    )
    d.pfs("auth", "set", "bob", "reader", "open")
    d.pfs("auth", "set", "bob", "reader", "seen")

    assert _names(_as(d, admin, "list-repo")) == ["closed", "hidden", "open", "seen"]
    assert _names(_as(d, bob, "list-repo")) == ["open", "seen"]
    assert _names(_as(d, admin, "list-pipeline")) == ["hidden", "seen"]
    assert _names(_as(d, bob, "list-pipeline")) == ["seen"]

    wait_for(lambda: len(rows(_as(d, admin, "list-job"))) == 2, what="a job of each pipeline")
    bob_jobs = rows(_as(d, bob, "list-job"))
    admin_jobs = rows(_as(d, admin, "list-job"))
    assert len(bob_jobs) == 1 and len(admin_jobs) == 2
    assert bob_jobs[0][1].startswith("seen/")  # OUTPUT COMMIT: pipeline/commit
    assert sorted(row[1].split("/")[0] for row in admin_jobs) == ["hidden", "seen"]
