"""The `pfs` verbs through click's runner against a real daemon: output and semantics."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest

from helpers import rows
from pfsfuse.tools.cli.group import VERBS


def test_repo_verbs(pfs):
    pfs("create-repo", "images", "-d", "pictures")
    pfs("create-repo", "edges")
    assert [r[0] for r in rows(pfs("list-repo").output)] == ["edges", "images"]
    assert rows(pfs("list-repo").output)[1][1:] == ["Less than a second ago", "0B"]
    info = json.loads(pfs("inspect-repo", "images", "--json").output)
    assert info["name"] == "images" and info["description"] == "pictures"
    pfs("update-repo", "images", "-d", "photos")
    assert "Description: photos" in pfs("inspect-repo", "images").output
    r = pfs("create-repo", "images", ok=False)
    assert "already exists" in r.output and "Traceback" not in r.output
    assert "invalid repo name" in pfs("create-repo", "bad/name", ok=False).output
    pfs("delete-repo", "edges")
    assert [r["name"] for r in json.loads(pfs("list-repo", "--json").output)] == ["images"]
    pfs("delete-repo", "--all")
    assert rows(pfs("list-repo").output) == []


def test_put_list_get_and_commits(pfs, tmp_path):
    pfs("create-repo", "images")
    pfs("put-file", "images", "master", "liberty.png", input=b"\x89PNG" + b"x" * 1000)
    pfs("put-file", "images", "master", "kitten.png", input=b"meow")
    commits = rows(pfs("list-commit", "images").output)
    assert len(commits) == 2 and commits[1][2] == "<none>" and commits[0][2] == commits[1][1]
    assert commits[0][5] == "1008B"
    files = rows(pfs("list-file", "images", "master").output)
    assert files == [["kitten.png", "file", "4B"], ["liberty.png", "file", "1004B"]]
    assert pfs("get-file", "images", "master", "kitten.png").stdout_bytes == b"meow"
    assert rows(pfs("list-file", "images", "master^").output) == [["liberty.png", "file", "1004B"]]
    out = tmp_path / "l.png"
    pfs("get-file", "images", commits[1][1], "liberty.png", "-o", str(out))
    assert out.read_bytes().startswith(b"\x89PNG")
    assert rows(pfs("list-commit", "images", "master", "-n", "1").output)[0][1] == commits[0][1]
    c = json.loads(pfs("inspect-commit", "images", "master", "--json").output)
    assert c["parent"] == commits[1][1] and c["size"] == 1008
    assert "Parent: " + commits[1][1] in pfs("inspect-commit", "images", "master").output


def test_start_finish_commit_and_branches(pfs):
    pfs("create-repo", "data")
    cid = pfs("start-commit", "data", "staging", "-m", "first batch").output.strip()
    pfs("put-file", "data", "staging", "a", input=b"1")
    pfs("put-file", "data", cid, "b", input=b"2")
    assert rows(pfs("list-commit", "data").output)[0][4] == "-"  # open: no duration yet
    pfs("finish-commit", "data", "staging")
    assert "already finished" in pfs("finish-commit", "data", cid, ok=False).output
    assert "finished" in pfs("put-file", "data", cid, "c", input=b"3", ok=False).output
    pfs("create-branch", "data", "master")
    assert rows(pfs("list-branch", "data").output) == [["master", "-"], ["staging", cid]]
    pfs("create-branch", "data", "master", "--head", "staging")
    assert rows(pfs("list-branch", "data").output)[0] == ["master", cid]
    pfs("create-branch", "out", "master", ok=False)
    pfs("create-repo", "out")
    pfs("create-branch", "out", "master", "-p", "data@master")
    assert "provenance" in pfs("delete-branch", "data", "master", ok=False).output
    pfs("delete-branch", "data", "master", "-f")
    assert [b["name"] for b in json.loads(pfs("list-branch", "data", "--json").output)] == ["staging"]
    pfs("delete-commit", "data", "staging")
    assert rows(pfs("list-branch", "data").output) == [["staging", "-"]]


def test_put_file_sources(pfs, tmp_path):
    pfs("create-repo", "r")
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("bb")
    f1, f2 = tmp_path / "one.csv", tmp_path / "two.csv"
    f1.write_text("1")
    f2.write_text("22")
    os.chdir(tmp_path)
    pfs("put-file", "r", "master", "-r", "-f", "dir")
    pfs("put-file", "r", "master", "prefix", "-f", "one.csv", "-f", "two.csv")
    listing = tmp_path / "list.txt"
    listing.write_text("one.csv\ntwo.csv\n")
    pfs("put-file", "r", "master", "listed", "-i", str(listing))
    pfs("put-file", "r", "master", "renamed.csv", "-f", str(f1))
    assert "is a directory; use -r" in pfs("put-file", "r", "master", "-f", "dir", ok=False).output
    assert "needs a PATH" in pfs("put-file", "r", "master", ok=False, input=b"x").output
    paths = [f["path"] for f in json.loads(pfs("glob-file", "r", "master", "**", "--json").output)]
    assert paths == [
        "dir",
        "dir/a.txt",
        "dir/sub",
        "dir/sub/b.txt",
        "listed",
        "listed/one.csv",
        "listed/two.csv",
        "prefix",
        "prefix/one.csv",
        "prefix/two.csv",
        "renamed.csv",
    ]
    out = tmp_path / "out"
    pfs("get-file", "r", "master", "dir", "-r", "-o", str(out))
    assert (out / "sub" / "b.txt").read_text() == "bb" and (out / "a.txt").read_text() == "a"
    assert "is a directory" in pfs("get-file", "r", "master", "dir", ok=False).output


def test_put_file_from_url(pfs, tmp_path):
    (tmp_path / "pic.png").write_bytes(b"picture")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/pic.png"
        pfs("create-repo", "images")
        pfs("put-file", "images", "master", "liberty.png", "-f", url)
        pfs("put-file", "images", "master", "-f", url)
        assert pfs("get-file", "images", "master", "liberty.png").stdout_bytes == b"picture"
        assert pfs("get-file", "images", "master", "pic.png").stdout_bytes == b"picture"
        r = pfs("put-file", "images", "master", "x", "-f", url + ".missing", ok=False)
        assert "HTTP 404" in r.output
        assert len(rows(pfs("list-commit", "images").output)) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_append_overwrite_copy_delete_diff(pfs):
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "f", input=b"hello ")
    pfs("put-file", "r", "master", "f", "-a", input=b"world")
    assert pfs("get-file", "r", "master", "f").stdout_bytes == b"hello world"
    pfs("put-file", "r", "master", "f", "-o", input=b"new")
    assert pfs("get-file", "r", "master", "f").stdout_bytes == b"new"
    pfs("create-repo", "other")
    pfs("copy-file", "r", "master", "f", "other", "master", "g")
    assert pfs("get-file", "other", "master", "g").stdout_bytes == b"new"
    assert "already exists" in pfs("copy-file", "r", "master", "f", "other", "master", "g", ok=False).output
    pfs("copy-file", "r", "master^", "f", "other", "master", "g", "-o")
    assert pfs("get-file", "other", "master", "g").stdout_bytes == b"hello world"
    pfs("put-file", "r", "master", "h", input=b"h")
    diff = pfs("diff-file", "r", "master").output
    assert diff.startswith("New Files:") and "h" in diff and "Old Files:" not in diff
    d = json.loads(pfs("diff-file", "r", "master", "", "r", "master~2", "", "--json").output)
    assert [f["path"] for f in d["new"]] == ["f", "h"] and [f["path"] for f in d["old"]] == ["f"]
    pfs("delete-file", "r", "master", "h")
    assert [r[0] for r in rows(pfs("list-file", "r", "master").output)] == ["f"]
    assert "not found" in pfs("delete-file", "r", "master", "h", ok=False).output
    f = json.loads(pfs("inspect-file", "r", "master", "f", "--json").output)
    assert f["type"] == "file" and f["size"] == 3 and len(f["hash"]) == 32


@pytest.mark.parametrize("path", ["../escape", "a//b", "./x", "a/./b", "a/../b"])
def test_bad_paths_are_one_line_errors(pfs, path):
    pfs("create-repo", "r")
    r = pfs("put-file", "r", "master", path, input=b"x", ok=False)
    assert "invalid path" in r.output and len(r.output.strip().splitlines()) == 1
    assert rows(pfs("list-commit", "r").output) == []


def test_fsck_and_version(pfs):
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "f", input=b"data")
    assert "ok" in pfs("fsck").output
    assert json.loads(pfs("fsck", "--json").output) == []
    assert rows(pfs("version").output)[0][0] == "pfs"


def test_the_verbs_table_names_every_command_of_each_module(pfs):
    for module, verbs in VERBS.items():
        found = [
            c
            for c in vars(importlib.import_module(f"pfsfuse.tools.cli.{module}")).values()
            if isinstance(c, click.Command)
        ]
        # a group's own commands (pfs auth login) are not verbs of pfs
        sub = {id(s) for g in found if isinstance(g, click.Group) for s in g.commands.values()}
        assert sorted(verbs) == sorted(c.name for c in found if id(c) not in sub)
    listed = pfs("--help").output
    assert all(f"  {verb}  " in listed for verbs in VERBS.values() for verb in verbs)


def test_get_file_loads_only_what_it_uses(pfs):
    """Start-up is most of a short command's time, more so when the page cache is cold: reading
    a file loads no other verb's module, no HTTP library, table renderer or OpenSSL, and no zstd
    for a file that does not compress."""
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "f", input=os.urandom(1000))
    run = "import sys; from pfsfuse.tools.cli.group import cli; cli(sys.argv[1:], standalone_mode=False)"
    show = "; print(*sys.modules, file=sys.stderr)"
    r = subprocess.run(
        [sys.executable, "-c", run + show, "get-file", "r", "master", "f"],
        env=pfs.daemon.env,
        capture_output=True,
        check=True,
    )
    loaded = set(r.stderr.decode().split())
    heavy = {"pfsfuse.tools.cli.repo", "http.client", "email", "rich", "hashlib", "zstandard", "subprocess"}
    assert loaded & heavy == set()


def test_tables_show_names_as_they_are_aligned_by_terminal_cells(pfs):
    pfs("create-repo", "r")
    for name in ("a[bold]b", "plain", "日本.txt"):
        pfs("put-file", "r", "master", name, input=b"x")
    assert pfs("list-file", "r", "master").output.splitlines() == [
        "NAME      TYPE  SIZE",
        "a[bold]b  file  1B",
        "plain     file  1B",
        "日本.txt  file  1B",
    ]
