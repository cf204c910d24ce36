"""pachctl 1.7's documented forms and verbs, through the real `pfs` binary against a real daemon:
REPO/COMMIT, several specs in one file, restart-datum PIPELINE PATHS, get-logs --inputs and
--master, version --client-only, $ADDRESS, a given salt, scale_down_threshold, unmount -a, a
missing mount directory, inspect-cluster, set-branch, extract-pipeline, edit-pipeline,
delete-all, get-object, get-tag, and extract/restore carrying pipelines."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from helpers import PFS, Daemon, Mount, fuse_unavailable, is_mounted, rows, wait_for

COPY = {"cmd": ["sh"], "stdin": ["cp -r /pfs/in/* /pfs/out/"]}


def spec(name, repo="in", glob="/*", transform=COPY, **extra) -> dict:
    return {
        "pipeline": {"name": name},
        "transform": transform,
        "input": {"atom": {"repo": repo, "glob": glob}},
        **extra,
    }


def fails(daemon, *args, input=None, env=None) -> str:
    """Run pfs expecting one clear line and a non-zero exit; returns stderr."""
    r = subprocess.run([PFS, *args], env={**daemon.env, **(env or {})}, input=input, capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err, (r.returncode, err)
    return err


def head(daemon, repo, ref="master") -> str:
    return json.loads(daemon.pfs("inspect-commit", repo, ref, "--json").stdout)["id"]


def get(daemon, repo, path, ref="master") -> bytes:
    return daemon.pfs("get-file", repo, ref, path).stdout


def test_several_specs_in_one_file_json_and_yaml(daemon, tmp_path):
    daemon.pfs("create-repo", "in")
    daemon.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
    both = tmp_path / "both.json"
    both.write_text(
        json.dumps(spec("one"))
        + "\n"
        + json.dumps(spec("two", repo="one", transform={"cmd": ["sh"], "stdin": ["cp -r /pfs/one/* /pfs/out/"]}))
    )  # 1.7's stream
    daemon.pfs("create-pipeline", "-f", str(both))
    yaml = tmp_path / "more.yaml"
    yaml.write_text(
        "pipeline: {name: three}\ntransform: {cmd: [sh], stdin: ['cp -r /pfs/in/* /pfs/out/']}\n"
        "input: {atom: {repo: in, glob: /*}}\n---\n"
        "pipeline: {name: four}\ntransform: {cmd: [sh], stdin: ['cp -r /pfs/in/* /pfs/out/']}\n"
        "input: {atom: {repo: in, glob: /*}}\n"
    )
    daemon.pfs("create-pipeline", "-f", str(yaml))
    assert sorted(r[0] for r in rows(daemon.pfs("list-pipeline").stdout.decode())) == ["four", "one", "three", "two"]
    c = head(daemon, "in")
    out = daemon.pfs("flush-commit", f"in/{c}").stdout.decode()  # REPO/COMMIT
    assert {r[0] for r in rows(out)} == {"one", "two", "three", "four"}
    assert get(daemon, "two", "a.txt") == b"a\n"
    # A bad second spec: nothing is created; a second spec that cannot be created: the first is undone.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec("five")) + json.dumps(spec("six", transform={"cmd": []})))
    assert "spec 2" in fails(daemon, "create-pipeline", "-f", str(bad))
    bad.write_text(json.dumps(spec("five")) + json.dumps(spec("one")))
    assert "already exists" in fails(daemon, "create-pipeline", "-f", str(bad))
    assert "five" not in daemon.pfs("list-pipeline").stdout.decode()
    # list-job -i takes REPO/COMMIT and REPO@COMMIT
    for form in (f"in/{c}", f"in@{c}"):
        assert len(rows(daemon.pfs("list-job", "-i", form).stdout.decode())) == 3  # one, three, four
    assert "expected REPO@COMMIT or REPO/COMMIT" in fails(daemon, "list-job", "-i", "in")


def test_restart_datum_by_input_paths_and_logs_by_inputs_and_master(daemon, tmp_path):
    daemon.pfs("create-repo", "in")
    daemon.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
    daemon.pfs("put-file", "in", "master", "b.txt", input=b"b\n")
    gate = tmp_path / "gate"
    stdin = [
        f"echo saw $in; while [ ! -e {gate} ] && [ $(basename $in) = b.txt ]; do sleep 0.05; done",
        "cp $in /pfs/out/",
    ]
    path = tmp_path / "wait.json"
    path.write_text(json.dumps(spec("wait", transform={"cmd": ["sh"], "stdin": stdin})))
    daemon.pfs("create-pipeline", "-f", str(path))
    wait_for(
        lambda: "saw /pfs/in/b.txt" in daemon.pfs("get-logs", "-p", "wait").stdout.decode(),
        60,
        what="the datum of b.txt to run",
    )
    daemon.pfs("restart-datum", "wait", "/b.txt")  # 1.7's form: PIPELINE INPUT_PATH,...
    assert "no datum" in fails(daemon, "restart-datum", "wait", "/nothing.txt")
    gate.touch()
    daemon.pfs("flush-commit", f"in/{head(daemon, 'in')}")
    assert get(daemon, "wait", "b.txt") == b"b\n"
    assert "has no running job" in fails(daemon, "restart-datum", "wait", "/b.txt")
    logs = daemon.pfs("get-logs", "-p", "wait", "--inputs", "/a.txt", "--raw").stdout.decode()
    assert logs.strip().splitlines() == ["saw /pfs/in/a.txt"]
    master = daemon.pfs("get-logs", "-p", "wait", "--master").stdout.decode()
    assert " started on in/" in master and "ended: success, 2 + 0 / 2 datums" in master
    assert "--master needs a pipeline" in fails(daemon, "get-logs", "--master")


def test_client_only_version_address_salt_and_scale_down(daemon, tmp_path):
    nowhere = {"PFS_ADDRESS": "127.0.0.1:1"}
    r = subprocess.run(
        [PFS, "version", "--client-only"], env={**daemon.env, **nowhere}, capture_output=True, timeout=60
    )
    assert r.returncode == 0 and [row[0] for row in rows(r.stdout.decode())] == ["pfs"]
    address = daemon.env["PFS_ADDRESS"]
    env = {k: v for k, v in daemon.env.items() if k != "PFS_ADDRESS"} | {"ADDRESS": address}
    r = subprocess.run([PFS, "create-repo", "in"], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr  # ADDRESS, 1.7's name
    r = subprocess.run(
        [PFS, "list-repo"], env={**daemon.env, "ADDRESS": "127.0.0.1:1"}, capture_output=True, timeout=60
    )
    assert r.returncode == 0 and b"in" in r.stdout  # PFS_ADDRESS wins

    daemon.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
    path = tmp_path / "salted.json"
    path.write_text(json.dumps(spec("salted", salt="my-salt-1", scale_down_threshold="1s")))
    daemon.pfs("create-pipeline", "-f", str(path))
    extracted = json.loads(daemon.pfs("extract-pipeline", "salted").stdout)
    assert extracted["salt"] == "my-salt-1" and extracted["scale_down_threshold"] == "1s"
    daemon.pfs("flush-commit", "in@master")

    def state():
        return json.loads(daemon.pfs("inspect-pipeline", "salted", "--json").stdout).get("state", "running")

    wait_for(lambda: state() == "standby", 30, what="the idle pipeline to scale down")
    daemon.pfs("put-file", "in", "master", "b.txt", input=b"b\n")
    daemon.pfs("flush-commit", "in@master")  # a new commit brings its workers back
    assert get(daemon, "salted", "b.txt") == b"b\n"
    path.write_text(json.dumps(spec("salted", salt="bad salt!")))
    assert "`salt`" in fails(daemon, "update-pipeline", "-f", str(path))


def test_edit_set_branch_cluster_objects_and_delete_all(daemon, tmp_path):
    daemon.pfs("create-repo", "in")
    daemon.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
    first = head(daemon, "in")
    daemon.pfs("put-file", "in", "master", "b.txt", input=b"b\n")
    daemon.pfs("set-branch", "in", first, "staging")  # 1.7's older create-branch --head
    assert ["staging", first] in rows(daemon.pfs("list-branch", "in").stdout.decode())

    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec("p")))
    daemon.pfs("create-pipeline", "-f", str(path))
    editor = {"EDITOR": "sed -i 's#cp -r /pfs/in/\\* /pfs/out/#echo edited > /pfs/out/x#'"}
    r = subprocess.run([PFS, "edit-pipeline", "p"], env={**daemon.env, **editor}, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    info = json.loads(daemon.pfs("inspect-pipeline", "p", "--json").stdout)
    assert info["version"] == 2 and info["spec"]["transform"]["stdin"] == ["echo edited > /pfs/out/x"]
    r = subprocess.run(
        [PFS, "edit-pipeline", "p"], env={**daemon.env, "EDITOR": "true"}, capture_output=True, timeout=60
    )
    assert r.returncode == 0 and b"unchanged" in r.stdout
    assert "the edited spec" in fails(daemon, "edit-pipeline", "p", env={"EDITOR": "sed -i s/pipeline/pipe/"})
    assert json.loads(daemon.pfs("inspect-pipeline", "p", "--json").stdout)["version"] == 2

    cluster = daemon.pfs("inspect-cluster").stdout.decode()
    assert f"Address: {daemon.env['PFS_ADDRESS']}" in cluster and "Repos: 3" in cluster and "Pipelines: 1" in cluster

    big = random.Random(1).randbytes(12 << 20)  # many chunks: its chunk list is an object
    daemon.pfs("put-file", "in", "master", "big", input=big)
    h = json.loads(daemon.pfs("inspect-file", "in", "master", "big", "--json").stdout)["hash"]
    assert daemon.pfs("get-object", h).stdout == big
    small = json.loads(daemon.pfs("inspect-file", "in", "master", "a.txt", "--json").stdout)["hash"]
    assert "get-file" in fails(daemon, "get-object", small)
    assert "not an object hash" in fails(daemon, "get-object", "xyz")
    assert "pfs keeps no tags" in fails(daemon, "get-tag", "sometag")

    assert "Aborted" in fails(daemon, "delete-all", input=b"n\n")
    daemon.pfs("delete-all", input=b"y\n")
    assert (
        rows(daemon.pfs("list-repo").stdout.decode()) == [] and rows(daemon.pfs("list-pipeline").stdout.decode()) == []
    )


def test_extract_and_restore_carry_pipelines(daemon, tmp_home):
    daemon.pfs("create-repo", "in")
    daemon.pfs("put-file", "in", "master", "a.txt", input=b"a\n")
    path = tmp_home / "p.json"
    path.write_text(json.dumps(spec("copy")))
    daemon.pfs("create-pipeline", "-f", str(path))
    daemon.pfs("flush-commit", "in@master")
    salt = json.loads(daemon.pfs("extract-pipeline", "copy").stdout)["salt"]
    dump = tmp_home / "dump"
    daemon.pfs("extract", "-o", str(dump))
    other = Daemon(tmp_home / "restored").start()
    try:
        out = other.pfs("restore", "-i", str(dump)).stdout.decode()
        assert out.strip().endswith("and 1 pipelines"), out
        assert json.loads(other.pfs("extract-pipeline", "copy").stdout)["salt"] == salt
        assert rows(other.pfs("list-job").stdout.decode()) == []  # its output is up to date already
        other.pfs("put-file", "in", "master", "b.txt", input=b"b\n")
        [job] = json.loads(other.pfs("flush-job", "in@master", "--json").stdout)
        # Content hashes are keyed per store: the restored store's first job processes a.txt again.
        assert job["state"] == "success" and job["total"] == 2
        assert get(other, "copy", "a.txt") == b"a\n" and get(other, "copy", "b.txt") == b"b\n"
    finally:
        other.stop()


@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_mount_makes_a_missing_directory_and_unmount_a(daemon, tmp_home):
    mnt = tmp_home / "not" / "there"
    daemon.pfs("create-repo", "in")
    with Mount(daemon, mnt) as m:
        assert (mnt / "in").is_dir()
        m.unmount("-a")
    assert mnt.is_dir() and not is_mounted(mnt)
