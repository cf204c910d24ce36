"""Auth records through `pfs extract` and `pfs restore`, with the real binary and two daemons: the
ACLs, the admins and lasting tokens (robots' and users') carry over, one-time passwords do not;
extracting needs an admin; a dump with auth is restored only where auth is active."""

from __future__ import annotations

import subprocess

from helpers import PFS, Daemon


def _as(d: Daemon, token: str | None, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**d.env, "PFS_AUTH_TOKEN": token or ""}
    return subprocess.run([PFS, *args], env=env, input=input, capture_output=True, timeout=300)


def _token(out: bytes) -> str:
    return next(line.split()[1] for line in out.decode().splitlines() if line.startswith("Token:"))


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0, r.stdout
    err = r.stderr.decode().strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_auth_survives_extract_and_restore(tmp_home):
    a, b = Daemon(tmp_home / "a"), Daemon(tmp_home / "b")
    dump = tmp_home / "dump"
    try:
        a.start()
        admin = _token(a.pfs("auth", "activate", "--admins=admin").stdout)
        a.pfs("create-repo", "data")
        a.pfs("put-file", "data", "master", "f", input=b"kept")
        bob = _token(a.pfs("auth", "get-auth-token", "bob").stdout)
        robot = _token(a.pfs("auth", "get-auth-token", "robot:ci").stdout)
        a.pfs("auth", "set", "bob", "reader", "data")
        a.pfs("auth", "set", "robot:ci", "writer", "data")
        otp = a.pfs("auth", "get-otp", "carol").stdout.decode().split()[2]

        assert "not an admin" in _one_line(_as(a, bob, "extract", "-o", str(dump)))
        assert not dump.exists()
        r = _as(a, admin, "extract", "-o", str(dump))
        assert r.returncode == 0, r.stderr
        assert bob.encode() not in dump.read_bytes() and admin.encode() not in dump.read_bytes()

        b.start()
        err = _one_line(b.pfs("restore", "-i", str(dump), check=False))
        assert "activate it first" in err
        assert b.pfs("list-repo").stdout.decode().count("data") == 0  # nothing was restored
        root = _token(b.pfs("auth", "activate", "--admins=root").stdout)
        r = _as(b, root, "restore", "-i", str(dump))
        assert r.returncode == 0, r.stderr

        assert _as(b, bob, "get-file", "data", "master", "f").stdout == b"kept"
        assert "not a writer" in _one_line(_as(b, bob, "put-file", "data", "master", "g", input=b"x"))
        r = _as(b, robot, "put-file", "data", "master", "g", input=b"from ci")
        assert r.returncode == 0, r.stderr
        assert sorted(_as(b, root, "auth", "list-admins").stdout.decode().split()) == ["admin", "root"]
        assert _as(b, admin, "auth", "whoami").stdout.decode().startswith('You are "admin"')
        acl = _as(b, root, "auth", "get", "data").stdout.decode()
        assert "bob: READER" in acl and "robot:ci: WRITER" in acl
        r = _as(b, None, "auth", "login", "carol", input=otp.encode() + b"\n")
        assert r.returncode != 0  # one-time passwords are not carried over
    finally:
        for d in (a, b):
            d.stop()
            d.kill()
