"""Intra-datum incrementality, through the real `pfs` binary: the documentation's summing example
(12, not 17) and its split-file variant (15, not 21), what a deleted file does, and the same
examples run by workers that copy datums to /pfs instead of serving it with FUSE."""

from __future__ import annotations

import json
import os

import pytest

from helpers import Daemon

SUM = """set -e
cd /pfs/nums
for d in *; do
  prev=$(cat /pfs/out/$d/result 2>/dev/null || echo 0)
  new=$(find $d -type f | sort | xargs -r cat | awk '{s += $1} END {print s + 0}')
  mkdir -p /pfs/out/$d
  echo $((prev + new)) > /pfs/out/$d/result
  find $d -type f | sort | tr '\\n' ' ' >> /pfs/out/$d/seen; echo >> /pfs/out/$d/seen
  find $d -type f | sort | xargs -r -n1 head -1 > /pfs/out/$d/firsts
done
"""


@pytest.fixture(params=["fuse", "copy"])
def home(request, tmp_home):
    """A daemon whose workers serve /pfs with FUSE, or (as without /dev/fuse) copy datums there."""
    if request.param == "fuse" and os.geteuid() != 0:
        pytest.skip("workers serve /pfs with FUSE only as root")
    d = Daemon(tmp_home / "home")
    if request.param == "copy":
        d.env["PFS_WORKER_FUSE"] = "0"
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _pipeline(daemon, tmp_path, name="sum"):
    spec = {
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh"], "stdin": SUM.splitlines()},
        "input": {"atom": {"repo": "nums", "glob": "/*"}},
        "incremental": True,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    daemon.pfs("create-pipeline", "-f", str(path))


def _commit(daemon, *put: tuple[str, bytes], delete: str = "", pipeline: str = "sum") -> str:
    daemon.pfs("start-commit", "nums", "master")
    for path, data in put:
        daemon.pfs("put-file", "nums", "master", path, input=data)
    if delete:
        daemon.pfs("delete-file", "nums", "master", delete)
    daemon.pfs("finish-commit", "nums", "master")
    head = daemon.pfs("inspect-commit", "nums", "master", "--json").stdout
    commit = json.loads(head)["id"]
    out = daemon.pfs("flush-commit", f"nums/{commit}").stdout.decode()  # 1.7's REPO/COMMIT form
    assert not pipeline or f"\n{pipeline} " in out, out
    return commit


def _get(daemon, path: str) -> str:
    return daemon.pfs("get-file", "sum", "master", path).stdout.decode()


def test_summing_example_sees_only_new_files(home, tmp_path):
    d = home
    d.pfs("create-repo", "nums")
    _commit(d, ("D1/F1", b"5\n"), pipeline="")
    _pipeline(d, tmp_path)
    d.pfs("flush-commit", "nums@master")
    assert _get(d, "D1/result") == "5\n"  # the first run sees everything
    _commit(d, ("D1/F2", b"7\n"))
    assert _get(d, "D1/result") == "12\n"  # not 17: the second run saw D1/F2 only
    _commit(d, ("D2/F1", b"1\n"))
    assert _get(d, "D1/result") == "12\n" and _get(d, "D2/result") == "1\n"  # D1 not run again
    assert _get(d, "D1/seen").splitlines() == ["D1/F1 ", "D1/F2 "]
    # A deleted file: the datum starts over with all its files and an empty /pfs/out.
    _commit(d, ("D1/F3", b"100\n"), delete="D1/F1")
    assert _get(d, "D1/result") == "107\n"
    assert _get(d, "D1/seen").splitlines() == ["D1/F2 D1/F3 "]


def test_split_variant_sees_only_new_records(home, tmp_path):
    d = home
    d.pfs("create-repo", "nums")
    d.pfs("put-file", "nums", "master", "data", "--split", "line", input=b"1\n2\n3\n")
    d.pfs("put-header", "nums", "master", "data", input=b"# n\n")  # awk counts it as 0
    _pipeline(d, tmp_path)
    d.pfs("flush-commit", "nums@master")
    assert _get(d, "data/result") == "6\n"
    d.pfs("put-file", "nums", "master", "data", "--split", "line", input=b"4\n5\n")
    d.pfs("flush-commit", "nums@master")
    assert _get(d, "data/result") == "15\n"  # not 21: the new records 4 and 5 only
    assert _get(d, "data/seen").splitlines()[-1] == "data/0000000000000003 data/0000000000000004 "
    assert _get(d, "data/firsts") == "# n\n# n\n"  # the new records read with their file's header
