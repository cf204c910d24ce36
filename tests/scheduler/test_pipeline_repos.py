"""A pipeline's repos belong to it while it lives."""

from __future__ import annotations

import json


def test_delete_repo_refuses_a_live_pipelines_output(daemon, tmp_path):
    daemon.pfs("create-repo", "data")
    spec = tmp_path / "p.json"
    spec.write_text(
        json.dumps(
            {
                "pipeline": {"name": "copy"},
                "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/data/. /pfs/out/"]},
                "input": {"atom": {"repo": "data", "glob": "/"}},
            }
        )
    )
    daemon.pfs("create-pipeline", "-f", str(spec))
    for args in (["copy"], ["copy", "--force"], ["__copy", "--force"]):
        r = daemon.pfs("delete-repo", *args, check=False)
        assert r.returncode == 1 and b"delete the pipeline instead" in r.stderr, r.stderr
        assert b"Traceback" not in r.stderr
    assert b"copy" in daemon.pfs("list-repo").stdout
    assert daemon.pfs("inspect-pipeline", "copy").returncode == 0
    daemon.pfs("delete-pipeline", "copy")
    assert b"copy" not in daemon.pfs("list-repo").stdout
    daemon.pfs("delete-repo", "data")  # an input, once nothing reads it
