"""The daemon's lifecycle and the real `pfs` binary: autostart, addresses, signals, streaming."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess

from helpers import PFS, Daemon, read_line, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_command_starts_the_daemon_and_shutdown_stops_it(tmp_home):
    d = Daemon(tmp_home / "home")  # not started: the CLI must start it
    del d.env["PFS_ADDRESS"]
    try:
        r = d.pfs("create-repo", "r")
        assert r.returncode == 0 and d.answers()
        pid = int((d.home / "daemon.pid").read_text())
        d.pfs("put-file", "r", "master", "f", input=b"x")
        assert d.pfs("get-file", "r", "master", "f").stdout == b"x"
        d.pfs("shutdown")
        with open(d.home / "daemon.pid") as lock:  # on return its store is closed: no lock held
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        wait_for(lambda: not _alive(pid), what="the daemon to exit")
        assert not (d.home / "pfs.sock").exists()
        # and it comes back on demand, with the data intact
        assert d.pfs("get-file", "r", "master", "f").stdout == b"x"
    finally:
        subprocess.run([PFS, "shutdown"], env=d.env, capture_output=True)
        pid = int((d.home / "daemon.pid").read_text() or 0)
        wait_for(lambda: not _alive(pid), what="the daemon to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_and_sigint_stop_cleanly(tmp_home):
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = Daemon(tmp_home / f"home{sig}").start()
        try:
            d.pfs("create-repo", "r")
            assert d.stop(sig) == 0
            assert not (d.home / "pfs.sock").exists()
        finally:
            d.kill()


def test_a_second_daemon_refuses_the_same_home(daemon):
    r = subprocess.run([PFS, "serve"], env=daemon.env, capture_output=True, timeout=60)
    assert r.returncode != 0 and b"already serves" in r.stderr
    assert b"Traceback" not in r.stderr
    assert daemon.answers()


def test_tcp_listen_and_pfs_address(tmp_home):
    port = _free_port()
    d = Daemon(tmp_home / "home", ["--listen", f"127.0.0.1:{port}", "--insecure"]).start()
    try:
        remote = {**d.env, "PFS_ADDRESS": f"127.0.0.1:{port}", "PFS_HOME": str(tmp_home / "none")}
        run = lambda *a, **kw: subprocess.run([PFS, *a], env=remote, capture_output=True, **kw)  # noqa: E731
        assert run("create-repo", "r").returncode == 0
        src = tmp_home / "local.bin"
        src.write_bytes(os.urandom(3 << 20))
        # over TCP the client streams the bytes itself: the daemon never reads client paths
        assert run("put-file", "r", "master", "x", "-f", str(src)).returncode == 0
        assert run("get-file", "r", "master", "x").stdout == src.read_bytes()
        assert d.pfs("get-file", "r", "master", "x").stdout == src.read_bytes()
        assert not (tmp_home / "none").exists()
    finally:
        d.stop()
        d.kill()


def test_streamed_bodies_over_tcp_arrive_whole(tmp_home):
    """Bodies read in large pieces and handed on uncopied: frames and files that start and end
    inside a piece, files of many pieces, and stdin, each comes back byte for byte."""
    port = _free_port()
    d = Daemon(tmp_home / "home", ["--listen", f"127.0.0.1:{port}", "--insecure"]).start()
    try:
        remote = {**d.env, "PFS_ADDRESS": f"127.0.0.1:{port}", "PFS_HOME": str(tmp_home / "none")}
        run = lambda *a, **kw: subprocess.run([PFS, *a], env=remote, capture_output=True, **kw)  # noqa: E731
        assert run("create-repo", "r").returncode == 0
        tree = tmp_home / "tree"
        tree.mkdir()
        sizes = {"empty": 0, "one": 1, "odd": (1 << 20) + 7, "big": (9 << 20) + 3, "small": 4095}
        for name, size in sizes.items():
            (tree / name).write_bytes(os.urandom(size))
        assert run("put-file", "r", "master", "/t", "-r", "-f", str(tree)).returncode == 0
        for name in sizes:
            assert run("get-file", "r", "master", f"/t/{name}").stdout == (tree / name).read_bytes()
        piped = os.urandom((5 << 20) + 11)
        assert run("put-file", "r", "master", "piped", input=piped).returncode == 0
        assert run("get-file", "r", "master", "piped").stdout == piped
    finally:
        d.stop()
        d.kill()


def test_errors_are_one_line_without_traceback(daemon):
    cases = [
        ("list-commit", "nope"),
        ("get-file", "nope", "master", "x"),
        ("create-repo", "a/b"),
        ("inspect-commit", "nope", "master^^"),
        ("put-file", "r", "master", "-f", "/does/not/exist"),
    ]
    daemon.pfs("create-repo", "r")
    for args in cases:
        r = daemon.pfs(*args, check=False)
        assert r.returncode == 1, args
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, lines)
    r = daemon.pfs("get-file", check=False)
    assert r.returncode == 2 and b"Usage" in r.stderr
    unreachable = subprocess.run(
        [PFS, "list-repo"],
        env={**daemon.env, "PFS_ADDRESS": f"127.0.0.1:{_free_port()}"},
        capture_output=True,
    )
    assert unreachable.returncode == 1 and b"cannot reach the pfs daemon" in unreachable.stderr


def test_subscribe_commit_streams_new_commits(daemon):
    daemon.pfs("create-repo", "r")
    first = daemon.pfs("put-file", "r", "master", "a", input=b"1")
    assert first.returncode == 0
    proc = subprocess.Popen([PFS, "subscribe-commit", "r", "master"], env=daemon.env, stdout=subprocess.PIPE)
    try:
        assert read_line(proc.stdout).startswith(b"REPO")
        assert read_line(proc.stdout).startswith(b"r\t")
        daemon.pfs("put-file", "r", "master", "b", input=b"2")
        second = read_line(proc.stdout).split(b"\t")
        head = daemon.pfs("inspect-commit", "r", "master").stdout.decode()
        assert second[1].decode() in head
    finally:
        proc.terminate()
        proc.wait(timeout=10)
