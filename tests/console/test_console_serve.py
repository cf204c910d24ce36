"""`pfs serve --console`: refused on an open address without auth, open on loopback without it,
and `pfs console` prints the URL the daemon serves."""

from __future__ import annotations

import subprocess

import httpx

from helpers import PFS, Daemon, free_port


def test_console_on_an_open_address_without_auth_is_refused(tmp_home):
    port = free_port()
    env = {"PFS_HOME": str(tmp_home / "h"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([PFS, "serve", "--console", f"0.0.0.0:{port}"], env=env, capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode != 0 and f"refusing to serve 0.0.0.0:{port} without auth" in err, err
    assert "Traceback" not in err


def test_console_on_loopback_without_auth_needs_no_sign_in(tmp_home):
    port = free_port()
    d = Daemon(tmp_home / "h", ["--console", f"127.0.0.1:{port}"]).start()
    try:
        d.pfs("create-repo", "open")
        assert d.pfs("console").stdout.decode().strip() == f"http://127.0.0.1:{port}/"
        d.env["PFS_AUTH_TOKEN"] = "pfs_left_from_elsewhere"  # auth is off: no sign-in link to make
        assert d.pfs("console").stdout.decode().strip() == f"http://127.0.0.1:{port}/"
        del d.env["PFS_AUTH_TOKEN"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True) as web:
            r = web.get("/repos")
            assert r.status_code == 200 and 'href="/repos/open/master/"' in r.text
            assert "HttpOnly" in r.history[-1].headers["set-cookie"]
            assert "SameSite=strict" in r.history[-1].headers["set-cookie"]
            r = web.get("/repos/open/master/")
            assert r.status_code == 200 and "no commits on master yet" in r.text
            bad = web.get("/repos/Not%20A%20Repo/master/")
            assert bad.status_code == 400 and "Traceback" not in bad.text
            assert web.get("/static/console.css").status_code == 200
    finally:
        d.stop()
        d.kill()
    assert not (tmp_home / "h" / "console").exists()  # the URL goes with the daemon
