"""The public SDK against a real daemon: verbs, refs, the commit context, streams, errors."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import pfsfuse
from pfsfuse import Client
from pfsfuse.sdk import FailedPrecondition, InvalidArgument, NotFound, Put


@pytest.fixture
def client(daemon):
    c = Client(f"unix:{daemon.home}/pfs.sock")
    try:
        yield c
    finally:
        c.close()


def test_top_level_import_is_lazy():
    code = (
        "import sys, pfsfuse.metadata.names; assert 'pfsfuse.sdk' not in sys.modules; "
        "from pfsfuse import Client; assert 'pfsfuse.sdk' in sys.modules; print(Client.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pfsfuse.sdk.client"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pfsfuse.Nope  # noqa: B018


def test_client_from_environment(daemon, monkeypatch):
    monkeypatch.setenv("PFS_ADDRESS", f"unix:{daemon.home}/pfs.sock")
    with Client() as c:
        c.create_repo("envrepo")
        assert [r.name for r in c.list_repo()] == ["envrepo"]


def test_repos_branches_commits(client):
    client.create_repo("images", description="pictures")
    assert client.inspect_repo("images").description == "pictures"
    first = client.start_commit("images", "master")
    client.put_file_bytes(first, "a.txt", b"one")
    client.finish_commit(first)
    client.put_file_bytes("images@master", "b.txt", b"two")  # a branch: one new commit
    commits = list(client.list_commit("images", "master"))
    assert len(commits) == 2 and commits[1].id == first.id
    assert client.inspect_commit("images@master^").id == first.id
    assert client.inspect_commit(("images", first.id)).finished is not None
    client.create_branch("images", "v1", first.id)
    assert {b.name for b in client.list_branch("images")} == {"master", "v1"}
    assert client.inspect_branch("images", "v1").head == first.id
    assert sorted(f.path for f in client.list_file("images@v1:/")) == ["a.txt"]
    client.delete_branch("images", "v1")
    assert {b.name for b in client.list_branch("images")} == {"master"}
    client.delete_repo("images")
    with pytest.raises(NotFound):
        client.inspect_repo("images")


def test_commit_context_finishes_or_deletes(client):
    client.create_repo("data")
    with client.commit("data", "master", description="first") as c:
        c.put_file_bytes("/x/1.csv", b"a,b\n1,2\n")
        c.put_file_bytes("/x/2.csv", iter([b"a,b\n", b"3,4\n"]))  # an iterable body
        c.put_file_bytes("/y", io.BytesIO(b"stream"))
    assert c.finished is not None and c.finished.id == c.id
    head = client.inspect_branch("data", "master").head
    assert head == c.id
    with pytest.raises(RuntimeError, match="boom"):
        with client.commit("data", "master") as bad:
            bad.put_file_bytes("half.txt", b"never lands")
            raise RuntimeError("boom")
    assert client.inspect_branch("data", "master").head == head  # nothing landed
    with pytest.raises(NotFound):
        client.inspect_commit(("data", bad.id))
    assert [f.path for f in client.walk_file("data@master:")] == ["", "x", "x/1.csv", "x/2.csv", "y"]


def test_files_read_write_glob_diff_copy(client):
    client.create_repo("r")
    body = bytes(range(256)) * 4096  # 1 MiB
    client.put_file_bytes("r@master", "big.bin", body)
    with client.get_file("r@master:big.bin") as f:
        assert f.read() == body
    assert client.get_file("r@master:big.bin", offset=1000, length=10).read() == body[1000:1010]
    assert client.get_file(("r", "master", "big.bin"), offset=len(body) - 3).read() == body[-3:]
    info = client.inspect_file("r@master", "big.bin")
    assert info.size == len(body) and info.type == "file" and len(info.hash) == 32
    client.write("r@master", [Put("d/a.csv", stream=io.BytesIO(b"1\n")), Put("d/b.csv", stream=io.BytesIO(b"2\n"))])
    assert [f.path for f in client.glob_file("r@master:d/*.csv")] == ["d/a.csv", "d/b.csv"]
    assert client.get_file("r@master:d/*.csv").read() == b"1\n2\n"
    client.copy_file("r@master:d", None, "r@master", "e")
    assert client.get_file("r@master:e/b.csv").read() == b"2\n"
    assert client.inspect_file("r@master:e").hash == client.inspect_file("r@master:d").hash
    diff = client.diff_file("r@master", "")
    assert [f.path for f in diff.new if f.type == "file"] == ["e/a.csv", "e/b.csv"]
    client.delete_file("r@master", "e/a.csv")
    assert [f.path for f in client.list_file("r@master:e")] == ["e/b.csv"]
    history = list(client.list_file("r@master:d", history=-1))
    assert {f.path for f in history} == {"d/a.csv", "d/b.csv"}


def test_list_file_pages(client):
    client.create_repo("many")
    client.write("many@master", [Put(f"f/{i:05d}", stream=io.BytesIO(b"x")) for i in range(2500)])
    names = [f.path for f in client.list_file("many@master:f")]
    assert names == [f"f/{i:05d}" for i in range(2500)]


def test_bad_input_is_a_clear_exception(client):
    client.create_repo("r")
    for bad in ["r", "r@", "@master", "bad repo@master", "r@master:../x", ("r",), 42]:
        with pytest.raises(InvalidArgument):
            client.get_file(bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        client.get_file("r@nosuch:x").read()
    client.put_file_bytes("r@master", "a", b"1")
    head = client.inspect_branch("r", "master").head
    with pytest.raises(FailedPrecondition):
        client.put_file_bytes(("r", head), "b", b"2")  # a finished commit
    with pytest.raises(InvalidArgument, match="contents must be bytes"):
        client.put_file_bytes("r@master", "c", "text")  # type: ignore[arg-type]
    assert [f.path for f in client.list_file("r@master")] == ["a"]


def test_pipeline_verbs(client, tmp_path):
    client.create_repo("src")
    client.put_file_bytes("src@master", "in.txt", b"hello\n")
    spec = {
        "pipeline": {"name": "upper"},
        "transform": {"cmd": ["sh", "-c", "tr a-z A-Z < /pfs/src/in.txt > /pfs/out/in.txt; echo done"]},
        "input": {"atom": {"repo": "src", "glob": "/"}},
    }
    info = client.create_pipeline(spec)
    assert info.name == "upper" and [p.name for p in client.list_pipeline()] == ["upper"]
    done = list(client.flush_commit(["src@master"]))
    assert [c.repo for c in done] == ["upper"]
    assert client.get_file("upper@master:in.txt").read() == b"HELLO\n"
    jobs = list(client.list_job("upper"))
    assert len(jobs) == 1
    assert client.inspect_job(jobs[0].id, block_state=True).state == "success"
    assert any("done" in line.message for line in client.get_logs("upper"))
    assert client.stop_pipeline("upper").state == "paused"
    assert client.start_pipeline("upper").state != "paused"
    client.delete_pipeline("upper")
    assert client.list_pipeline() == []
    with pytest.raises(InvalidArgument):
        client.create_pipeline({"pipeline": {"name": "x"}, "bogus": 1})


def test_refs_split_is_what_the_cli_spreads():
    from pfsfuse.metadata import refs  # (the SDK's commit and file arguments use its syntax)

    assert refs.split("images@master~2:a/b@c.txt") == ("images", "master~2", "a/b@c.txt")
    assert refs.split("images@" + "0" * 32) == ("images", "0" * 32, None)
    # not a ref: the CLI leaves such words alone
    for word in ("images", "user@host.txt", "bad name@master", "images@", "@master:a", "images@mas ter"):
        assert refs.split(word) is None, word
