"""The operator's URL policy ($PFS_HOME/policy.toml): what put-file's URLs and pipelines' egress
may reach, checked on resolved addresses and on every redirect, through the real `pfs` binary
against real daemons listening on TCP (secure by default) and on the unix socket only (open)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import Daemon, free_port, wait_for
from pfsfuse import urlpolicy
from pfsfuse.metadata.errors import InvalidArgument, PermissionDenied


class Web:
    """A local web server: /data answers b"payload", /hop redirects to `self.target`."""

    def __init__(self):
        web = self
        self.target = ""

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/hop":
                    self.send_response(302)
                    self.send_header("Location", web.target)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"payload")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web() -> Iterator[Web]:
    w = Web()
    try:
        yield w
    finally:
        w.close()


def _tcp_daemon(home: Path, policy: str | None = None) -> Daemon:
    home.mkdir(mode=0o700)
    if policy is not None:
        (home / "policy.toml").write_text(policy)
    return Daemon(home, ["--listen", f"127.0.0.1:{free_port()}", "--insecure"])


@pytest.fixture
def tcp(tmp_home) -> Iterator[Daemon]:
    d = _tcp_daemon(tmp_home / "home")
    try:
        yield d.start()
    finally:
        d.stop()
        d.kill()


def _refusal(d: Daemon, *args: str) -> str:
    r = d.pfs(*args, check=False)
    assert r.returncode != 0, r.stdout
    err = r.stderr.decode().strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_policy_checks_addresses_not_names():
    p = urlpolicy.secure()
    for url, kind in [
        ("http://127.0.0.1/x", "loopback"),
        ("http://localhost/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://0.0.0.0/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:169.254.169.254]/x", "link-local"),
        ("http://10.1.2.3/x", "private"),
        ("http://192.168.0.1/x", "private"),
        ("http://[fd00::1]/x", "private"),
        ("s3://bucket/key?endpoint=http://127.0.0.1:9000", "loopback"),
    ]:
        with pytest.raises(PermissionDenied, match=f"is a {kind} address"):
            p.check_url(url)
    p.check_url("https://93.184.215.14/x")  # a public address
    p.check_url("s3://bucket/key")  # the operator's own endpoint is not the caller's to choose
    with pytest.raises(PermissionDenied, match="scheme file:// is not allowed"):
        p.check_url("file:///etc")
    with pytest.raises(InvalidArgument, match="endpoint must be an http"):
        p.check_url("s3://b/k?endpoint=file:///etc")
    urlpolicy.OPEN.check_url("http://127.0.0.1/x")


def test_policy_file(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    (tmp_path / "policy.toml").write_text(
        f'[urls]\nschemes = ["https", "file"]\nloopback = true\nfile_dirs = ["{exports}"]\n'
    )
    p = urlpolicy.load(tmp_path, listening=True)
    p.check_url("https://127.0.0.1/x")  # loopback allowed; link-local and private keep the default
    with pytest.raises(PermissionDenied, match="link-local"):
        p.check_url("https://169.254.169.254/")
    with pytest.raises(PermissionDenied, match=r"scheme http:// is not allowed \(URL policy: .*policy.toml\)"):
        p.check_url("http://127.0.0.1/x")
    p.check_url(f"file://{exports}/out")
    (exports / "escape").symlink_to("/etc")
    for outside in (f"file://{tmp_path}/other", f"file://{exports}/../x", f"file://{exports}/escape/x"):
        with pytest.raises(PermissionDenied, match="file:// may write only under"):
            p.check_url(outside)
    assert urlpolicy.load(tmp_path / "nothing", listening=False) == urlpolicy.OPEN
    for bad, why in [
        ("[urls]\nschemes = ['gopher']\n", "unknown schemes gopher"),
        ("[urls]\nloopback = 'yes'\n", "loopback must be true or false"),
        ("[urls]\nprivat = true\n", "unknown keys in \\[urls\\]: privat"),
        ("[urls\n", "policy.toml"),
        ("[urls]\nfile_dirs = ['relative']\n", "must be absolute"),
    ]:
        (tmp_path / "policy.toml").write_text(bad)
        with pytest.raises(InvalidArgument, match=why):
            urlpolicy.load(tmp_path, listening=True)


def test_tcp_daemon_refuses_internal_addresses(tcp, web):
    tcp.pfs("create-repo", "r")
    err = _refusal(tcp, "put-file", "r", "master", "x", "-f", f"{web.url}/data")
    assert "127.0.0.1 is a loopback address" in err and "the default for a daemon on TCP" in err
    err = _refusal(tcp, "put-file", "r", "master", "x", "-f", "http://169.254.169.254/latest/meta-data/")
    assert "link-local" in err
    err = _refusal(tcp, "put-file", "r", "master", "x", "-f", "s3://b/k?endpoint=http://10.0.0.1:9000")
    assert "10.0.0.1 is a private address" in err
    assert tcp.pfs("list-commit", "r").stdout.decode().count("\n") <= 1  # nothing was committed


def test_redirects_are_checked_again(tmp_home, web):
    d = _tcp_daemon(tmp_home / "home", "[urls]\nloopback = true\n")
    try:
        d.start()
        d.pfs("create-repo", "r")
        d.pfs("put-file", "r", "master", "ok", "-f", f"{web.url}/data")  # the operator allowed loopback
        assert d.pfs("get-file", "r", "master", "ok").stdout == b"payload"
        web.target = "http://169.254.169.254/latest/meta-data/"
        err = _refusal(d, "put-file", "r", "master", "meta", "-f", f"{web.url}/hop")
        assert "169.254.169.254 is a link-local address" in err
        web.target = "file:///etc/passwd"
        assert "file:// is not allowed" in _refusal(d, "put-file", "r", "master", "f", "-f", f"{web.url}/hop")
        web.target = f"{web.url}/data"
        d.pfs("put-file", "r", "master", "hopped", "-f", f"{web.url}/hop")
        assert d.pfs("get-file", "r", "master", "hopped").stdout == b"payload"
    finally:
        d.stop()
        d.kill()


def test_unix_socket_daemon_reaches_anything(daemon, web):
    daemon.pfs("create-repo", "r")
    daemon.pfs("put-file", "r", "master", "x", "-f", f"{web.url}/data")
    assert daemon.pfs("get-file", "r", "master", "x").stdout == b"payload"


def _spec(tmp: Path, url: str) -> str:
    path = tmp / f"spec-{abs(hash(url))}.json"
    spec = {
        "pipeline": {"name": "p"},
        "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/in/. /pfs/out/"]},
        "input": {"atom": {"repo": "in", "glob": "/"}},
        "egress": {"URL": url},
    }
    path.write_text(json.dumps(spec))
    return str(path)


def test_egress_follows_the_policy(tmp_home, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    d = _tcp_daemon(tmp_home / "home")
    try:
        d.start()
        d.pfs("create-repo", "in")
        err = _refusal(d, "create-pipeline", "-f", _spec(tmp_path, f"file://{exports}"))
        assert "scheme file:// is not allowed" in err
        err = _refusal(d, "create-pipeline", "-f", _spec(tmp_path, "s3://b/d?endpoint=http://169.254.169.254"))
        assert "link-local" in err
        assert "is not an object-store URL" in _refusal(d, "create-pipeline", "-f", _spec(tmp_path, "https://x/y"))
        assert d.pfs("list-pipeline").stdout.decode().count("\n") <= 1
        d.stop()
        (d.home / "policy.toml").write_text(f'[urls]\nschemes = ["s3", "file"]\nfile_dirs = ["{exports}"]\n')
        d.start()
        err = _refusal(d, "create-pipeline", "-f", _spec(tmp_path, f"file://{tmp_path}"))
        assert f"file:// may write only under {exports}" in err
        d.pfs("create-pipeline", "-f", _spec(tmp_path, f"file://{exports}/sub"))
        d.pfs("put-file", "in", "master", "f", input=b"egressed")
        wait_for(lambda: (exports / "sub" / "f").exists(), timeout=120, what="the job's egress")
        assert (exports / "sub" / "f").read_bytes() == b"egressed"
    finally:
        d.stop()
        d.kill()
