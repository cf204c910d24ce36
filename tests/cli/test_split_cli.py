"""Split files, headers and footers, history, repo@ref:path, garbage-collect, extract and restore,
through the real `pfs` command and daemon."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import PFS, Daemon, Mount, fuse_unavailable, rows

USERS_CSV = "id,name,email\n4,alice,aaa@place.com\n7,bob,bbb@place.com\n"


def sh(daemon: Daemon, script: str, cwd: Path) -> str:
    """Run a shell script with `pfs` on the PATH against `daemon`; its stdout."""
    env = {**daemon.env, "PATH": f"{Path(PFS).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-eo", "pipefail", "-c", script], env=env, cwd=cwd, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_the_header_and_footer_example_of_the_pachyderm_docs(daemon, tmp_path):
    """'Specifying Header/Footer' of the 1.7 docs, command for command (pachctl is pfs)."""
    (tmp_path / "users.csv").write_text(USERS_CSV)
    run = functools.partial(sh, daemon, cwd=tmp_path)
    run("pfs create-repo bar")
    run("cat users.csv | tail -n +2 | pfs put-file bar master users --split line")
    assert rows(run("pfs list-file bar master")) == [["users", "dir", "42B"]]
    assert rows(run("pfs list-file bar master /users/")) == [
        ["users/0000000000000000", "file", "22B"],
        ["users/0000000000000001", "file", "20B"],
    ]
    assert run("pfs get-file bar master /users/0000000000000000") == "4,alice,aaa@place.com\n"
    run("cat users.csv | head -n 1 | pfs put-header bar master users")
    assert run("pfs get-file bar master /users/0000000000000000") == "id,name,email\n4,alice,aaa@place.com\n"
    assert run("pfs get-file bar master /users") == "id,name,email\n"
    assert run("pfs get-file bar master '/users/*'") == USERS_CSV
    run('echo "" | pfs put-header bar master users -f -')
    assert run("pfs get-file bar master '/users/*'") == "4,alice,aaa@place.com\n7,bob,bbb@place.com\n"
    run("pfs put-footer bar master users -f users.csv")
    assert run("pfs get-file bar master users/0000000000000001") == "7,bob,bbb@place.com\n" + USERS_CSV
    assert run("pfs fsck") == "ok: no problems found\n"


def test_split_kinds_and_bad_input_through_the_cli(pfs):
    pfs("create-repo", "r")
    pfs(
        "put-file",
        "r",
        "master",
        "values",
        "--split",
        "json",
        "--target-file-datums",
        "2",
        input='{"a": "}"}\n[1,\n 2]\n"x" 4',
    )
    assert [f["path"] for f in json.loads(pfs("list-file", "r", "master", "values", "--json").output)] == [
        "values/0000000000000000",
        "values/0000000000000001",
    ]
    assert pfs("get-file", "r", "master", "values/*").stdout_bytes == b'{"a": "}"}\n[1,\n 2]\n"x" 4'
    dump = "SET a = 1;\nCOPY public.t (x) FROM stdin;\n1\n2\n\\.\n-- done\n"
    pfs("put-file", "r", "master", "t", "--split", "sql", input=dump)
    assert (
        pfs("get-file", "r", "master", "t/0000000000000001").output
        == "SET a = 1;\nCOPY public.t (x) FROM stdin;\n2\n\\.\n-- done\n"
    )
    pfs("put-file", "r", "master", "plain.csv", input="a,b\n")
    for args, stdin, error in [
        (["put-file", "r", "master", "v", "--split", "json"], '{"a": ]', "malformed JSON at byte 6"),
        (["put-file", "r", "master", "t2", "--split", "sql"], "SET a = 1;\n", "no 'COPY ... FROM stdin;' line"),
        (["put-header", "r", "master", "plain.csv"], "h\n", "plain.csv is a file"),
        (["put-file", "r", "master", "x", "--target-file-datums", "3"], "1\n", "need --split"),
    ]:
        out = pfs(*args, input=stdin, ok=False).output
        assert error in out.strip().splitlines()[-1] and "Traceback" not in out, out
    assert len(rows(pfs("list-commit", "r").output)) == 3


def test_repo_at_ref_colon_path_wherever_repo_ref_path_goes(pfs, tmp_path):
    pfs("create-repo", "images")
    (tmp_path / "liberty.png").write_bytes(b"PNG1")
    pfs("put-file", "images@master:liberty.png", "-f", str(tmp_path / "liberty.png"))
    pfs("put-file", "images", "master", "user@host.txt", input="at sign in a path")  # untouched
    assert pfs("get-file", "images@master:liberty.png").stdout_bytes == b"PNG1"
    assert pfs("get-file", "images@master", "user@host.txt").output == "at sign in a path"
    assert [r[0] for r in rows(pfs("list-file", "images@master").output)] == ["liberty.png", "user@host.txt"]
    pfs("copy-file", "images@master^:liberty.png", "images@master:copy.png")
    assert pfs("get-file", "images", "master", "copy.png").stdout_bytes == b"PNG1"
    assert json.loads(pfs("inspect-file", "images@master:copy.png", "--json").output)["size"] == 4
    pfs("put-file", "images@master:liberty.png", input="PNG2")
    assert pfs("diff-file", "images@master:liberty.png").output.count("liberty.png  file  4B") == 2
    assert "REPO@REF[:PATH]" in pfs("get-file", "--help").output


def test_list_file_history(pfs):
    pfs("create-repo", "r")
    for content in ("one", "three!", "five!"):
        pfs("put-file", "r", "master", "a", input=content)
    pfs("put-file", "r", "master", "b", input="b")
    commits = [r[1] for r in rows(pfs("list-commit", "r").output)]
    table = rows(pfs("list-file", "r", "master", "--history", "all").output)
    assert table == [
        [commits[1], "a", "file", "5B"],
        [commits[2], "a", "file", "6B"],
        [commits[3], "a", "file", "3B"],
        [commits[0], "b", "file", "1B"],
    ]
    assert len(rows(pfs("list-file", "r", "master", "a", "--history", "2").output)) == 2
    assert "give a number of versions" in pfs("list-file", "r", "master", "--history", "0", ok=False).output


def test_garbage_collect_purges_deleted_data(pfs, daemon):
    pfs("create-repo", "r")
    secret = os.urandom(300) + b"TOP-SECRET-b1e2" + os.urandom(300)
    pfs("put-file", "r", "master", "secret", input=secret)
    pfs("put-file", "r", "master", "public", input=os.urandom(1000))
    pfs("delete-file", "r", "master", "secret")
    for commit in [r[1] for r in rows(pfs("list-commit", "r").output)][1:]:  # those that held it
        pfs("delete-commit", "r", commit)
    chunks = daemon.home / "chunks"
    holds = lambda: any(secret[300:315] in p.read_bytes() for p in chunks.rglob("*") if p.is_file())  # noqa: E731
    assert holds()
    dry = json.loads(pfs("garbage-collect", "--dry-run", "--json").output)
    assert dry["dry_run"] and dry["chunks"] == 1 and holds()
    out = pfs("garbage-collect").output
    assert out.startswith("Freed ") and "1 chunks" in out
    assert not holds()
    assert pfs("fsck").output == "ok: no problems found\n"
    assert len(pfs("get-file", "r", "master", "public").stdout_bytes) == 1000


def test_extract_and_restore_round_trip_by_file_object_store_and_http(pfs, daemon, tmp_home):
    pfs("create-repo", "r", "-d", "described")
    pfs("put-file", "r", "master", "users", "--split", "line", input="a\nb\n")
    pfs("put-header", "r", "master", "users", input="h\n")
    pfs("put-file", "r", "master", "big", input=os.urandom(3 << 20))
    dump = tmp_home / "backup.pfsdump"
    pfs("extract", "-o", str(dump))
    pfs("extract", "--url", f"file://{tmp_home}/bucket")
    assert "already holds a dump" in pfs("extract", "--url", f"file://{tmp_home}/bucket", ok=False).output
    expected = (_commits(pfs("list-commit", "r", "--json").output), pfs("get-file", "r", "master", "users/*").output)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_home)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = Daemon(tmp_home / "restored").start()
    try:
        for source in (
            ["-i", str(dump)],
            ["--url", f"file://{tmp_home}/bucket"],
            ["--url", f"http://127.0.0.1:{server.server_port}/backup.pfsdump"],
        ):
            r = other.pfs("restore", *source)
            assert r.stdout.decode().startswith("Restored 1 repos, 3 commits, 1 branches")
            got = (
                _commits(other.pfs("list-commit", "r", "--json").stdout),
                other.pfs("get-file", "r", "master", "users/*").stdout.decode(),
            )
            assert got == expected
            assert other.pfs("fsck").stdout.decode() == "ok: no problems found\n"
            other.pfs("delete-repo", "r")  # empty again, for the next source
        # From a truncated file: one clear line, nothing written.
        (tmp_home / "cut").write_bytes(dump.read_bytes()[:-100])
        r = other.pfs("restore", "-i", str(tmp_home / "cut"), check=False)
        assert r.returncode != 0 and "ends early" in r.stderr.decode() and b"Traceback" not in r.stderr
        assert other.pfs("list-repo").stdout.decode().strip().splitlines()[1:] == []
    finally:
        other.stop()
        server.shutdown()
    # Into a store that is not empty.
    out = pfs("restore", "-i", str(dump), ok=False).output
    assert "needs an empty store" in out and "Traceback" not in out


def _commits(listing) -> list[dict]:
    """Commits as list-commit --json shows them, but for their root page: its hash is keyed with
    the store's own seed."""
    return [{k: v for k, v in c.items() if k != "tree"} for c in json.loads(listing)]


@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_the_mount_shows_records_with_their_header_and_footer(pfs, daemon, tmp_home):
    pfs("create-repo", "bar")
    pfs("put-file", "bar", "master", "users", "--split", "line", input="4,alice\n7,bob\n")
    pfs("put-header", "bar", "master", "users", input="id,name\n")
    pfs("put-footer", "bar", "master", "users", input="# end\n")
    mnt = tmp_home / "mnt"
    mnt.mkdir()
    with Mount(daemon, mnt).start():
        record = mnt / "bar" / "master" / "users" / "0000000000000001"
        assert record.read_bytes() == b"id,name\n7,bob\n# end\n"
        assert record.stat().st_size == len(b"id,name\n7,bob\n# end\n")
        sizes = {p.name: p.stat().st_size for p in (mnt / "bar" / "master" / "users").iterdir()}
        assert sizes == {"0000000000000000": 22, "0000000000000001": 20}
