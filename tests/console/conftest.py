"""A daemon serving the web console, with auth active, real repos, pipelines and jobs, and a
headless Chromium (Debian's, driven by Playwright) signed in as the admin or as a user without
access. Screenshots of each view are kept in .artifacts/console/ (`shots`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from helpers import Daemon, free_port

CHROMIUM = "/usr/bin/chromium"


class Site:
    """The daemon, the console's URL, and the tokens of `admin` and of `robot:bob` (no scope)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.flag = tmp / "release"
        self.daemon = Daemon(tmp / "h", ["--console", f"127.0.0.1:{self.port}"]).start()
        out = self.daemon.pfs("auth", "activate", "--admins=admin").stdout.decode()
        self.admin = out.split()[1]
        self.daemon.env["PFS_AUTH_TOKEN"] = self.admin
        self.bob = self.pfs("auth", "get-auth-token", "robot:bob").splitlines()[2].split()[1]

    def pfs(self, *args: str, input: bytes | None = None) -> str:
        return self.daemon.pfs(*args, input=input).stdout.decode()

    def put(self, repo: str, path: str, data: bytes, branch: str = "master") -> None:
        self.pfs("put-file", repo, branch, path, "-f", "-", input=data)

    def pipeline(self, spec: dict) -> None:
        f = self.tmp / f"{spec['pipeline']['name']}.json"
        f.write_text(json.dumps(spec))
        self.pfs("create-pipeline", "-f", str(f))

    def close(self) -> None:
        self.daemon.stop()
        self.daemon.kill()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def _parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 200_000
    table = pa.table({"city": [f"city-{i}" for i in range(n)], "people": list(range(n))})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=20_000, compression="none")
    return buf.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (packaging/test-setup.sh)")
    s = Site(Path(tmp_path_factory.mktemp("con")))
    try:
        s.pfs("create-repo", "images")
        s.pfs("start-commit", "images", "master")
        s.put("images", "table.csv", b"city,people\nOslo,700000\nLima,10000000\n")
        s.put("images", "meta/info.json", b'{"camera": "x100", "tags": ["a", "b"]}')
        s.put("images", "notes.txt", b"first notes\n")
        s.put("images", "red.png", _png())
        s.put("images", "cities.parquet", _parquet())
        s.pfs("finish-commit", "images", "master")
        # a second commit: one file changed, one added, one removed
        s.pfs("start-commit", "images", "master", "-m", "second")
        s.put("images", "notes.txt", b"second notes\n")
        s.put("images", "added.txt", b"new\n")
        s.pfs("delete-file", "images", "master", "table.csv")
        s.pfs("finish-commit", "images", "master")
        s.pfs("create-repo", "many")
        tree = s.tmp / "many"
        tree.mkdir()
        for i in range(450):
            (tree / f"f{i:05d}").write_bytes(b"x")
        s.pfs("put-file", "many", "master", "/", "-r", "-f", str(tree))
        s.pfs("create-repo", "secret")
        s.put("secret", "plans.txt", b"top secret\n")
        s.pipeline(
            {
                "pipeline": {"name": "upper"},
                "transform": {"cmd": ["sh", "-c", "echo upper-ran; tr a-z A-Z < /pfs/images/notes.txt > /pfs/out/n"]},
                "input": {"atom": {"repo": "images", "glob": "/"}},
            }
        )
        s.pipeline(
            {
                "pipeline": {"name": "broken"},
                "transform": {"cmd": ["sh", "-c", "echo about-to-fail; exit 3"]},
                "input": {"atom": {"repo": "upper", "glob": "/"}},
                "datum_tries": 1,
            }
        )
        s.pfs("flush-commit", "images@master")
        yield s
    finally:
        s.close()
    log = s.daemon.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]  # no page failed with a 500


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where each view's screenshot is kept: .artifacts/console/ of the checkout (git ignores it),
    or $PFS_ARTIFACTS/console. Not pytest's tmp dir, which other runs prune."""
    root = Path(os.environ.get("PFS_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".artifacts")
    where = root / "console"
    where.mkdir(parents=True, exist_ok=True)
    return where


def _signed_in(browser, site: Site, token: str):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(site.url + "/")
    assert "/signin" in page.url  # nothing is shown before signing in
    page.fill("input[name=code]", token)
    page.click("button[type=submit]")
    page.wait_for_url(site.url + "/")
    return ctx, page


@pytest.fixture
def admin(browser, site):
    ctx, page = _signed_in(browser, site, site.admin)
    try:
        yield page
    finally:
        ctx.close()


@pytest.fixture
def bob(browser, site):
    ctx, page = _signed_in(browser, site, site.bob)
    try:
        yield page
    finally:
        ctx.close()
