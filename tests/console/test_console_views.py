"""The web console in a real browser against a real daemon: each view shows what it should, the
actions change the store, and a user without access sees nothing of a repo."""

from __future__ import annotations

import re
import subprocess
import urllib.request

import pytest

from helpers import PFS, wait_for

pytestmark = pytest.mark.slow


def shot(page, shots, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert (shots / f"{name}.png").stat().st_size > 1000


def test_lineage_shows_repos_and_pipelines_with_state(admin, site, shots):
    svg = admin.locator("svg.dag")
    for name in ("images", "many", "secret", "upper", "broken"):
        assert svg.locator(f'[data-node="{name}"]').count() == 1, name
    assert "pipeline · running" in (svg.locator('[data-node="upper"]').text_content() or "")
    assert svg.locator("path.edge").count() == 2  # images → upper → broken
    shot(admin, shots, "lineage")
    admin.click('[data-node="upper"]')
    admin.wait_for_url(re.compile(r"/pipelines/upper$"))


def test_file_browser_previews_each_kind(admin, site, shots):
    base = site.url + "/repos/images"
    admin.goto(base + "/master/")
    names = admin.locator("table.files td a").all_inner_texts()
    assert names == ["added.txt", "cities.parquet", "meta", "notes.txt", "red.png"]
    shot(admin, shots, "browser")
    admin.goto(base + "/master%5E/table.csv")  # the commit before: table.csv was still there
    assert admin.locator("table.csv th").all_text_contents() == ["city", "people"]
    assert admin.locator("table.csv td").all_inner_texts()[:2] == ["Oslo", "700000"]
    shot(admin, shots, "csv")
    admin.goto(base + "/master/meta/info.json")
    assert '"camera": "x100"' in admin.locator("pre.json").inner_text()
    admin.goto(base + "/master/notes.txt")
    assert admin.locator("pre.text").inner_text().strip() == "second notes"
    admin.goto(base + "/master/red.png")
    img = admin.locator(".preview.image img")
    wait_for(lambda: img.evaluate("i => i.complete && i.naturalWidth") == 40, what="the image to load")
    admin.goto(base + "/master/cities.parquet")
    schema = admin.locator("table.schema td").all_inner_texts()
    assert schema[:2] == ["city", "string"] and schema[2:] == ["people", "int64"]
    rows = admin.locator("table.parquet tbody tr")
    assert rows.count() == 50 and rows.first.inner_text().split() == ["city-0", "0"]
    assert "200000 rows in 10 row groups" in admin.content()
    shot(admin, shots, "parquet")
    # the download is the file's bytes
    href = admin.locator("a", has_text="Download").get_attribute("href")
    cookie = {c["name"]: c["value"] for c in admin.context.cookies()}
    req = urllib.request.Request(site.url + href, headers={"Cookie": f"pfs_console={cookie['pfs_console']}"})
    with urllib.request.urlopen(req) as r:
        got = r.read()
        assert r.headers["Content-Disposition"].startswith("attachment")
    assert (
        got
        == subprocess.run(
            [PFS, "get-file", "images", "master", "cities.parquet"],
            env=site.daemon.env,
            capture_output=True,
            check=True,
        ).stdout
    )


def test_parquet_preview_reads_only_what_it_shows(admin, site):
    admin.goto(site.url + "/repos/images/master/cities.parquet")
    read = admin.locator(".read-bytes").inner_text()  # "read N KiB of M KiB"
    m = re.match(r"read ([\d.]+) (\w+) of ([\d.]+) (\w+)", read)
    assert m, read
    unit = {"B": 1, "KiB": 1024, "MiB": 1024**2}
    assert float(m[1]) * unit[m[2]] < float(m[3]) * unit[m[4]] / 5, read  # the footer and one row group of ten


def test_big_directory_is_paged(admin, site, shots):
    admin.goto(site.url + "/repos/many/master/")
    first = admin.locator("table.files td a").all_inner_texts()
    assert first[0] == "f00000" and len(first) == 200
    admin.click("a.next")
    second = admin.locator("table.files td a").all_inner_texts()
    assert second[0] == "f00200" and len(second) == 200
    admin.click("a.next")
    third = admin.locator("table.files td a").all_inner_texts()
    assert third[-1] == "f00449" and len(third) == 50 and admin.locator("a.next").count() == 0
    shot(admin, shots, "paged")


def test_commit_log_and_compare(admin, site, shots):
    admin.goto(site.url + "/log/images")
    rows = admin.locator("table.commits tbody tr")
    assert rows.count() == 2 and "second" in rows.first.inner_text()
    shot(admin, shots, "log")
    rows.first.locator("a", has_text="changes").click()
    changes = {
        admin.locator("table.diff tbody tr").nth(i).locator("td").nth(1).inner_text(): admin.locator(
            "table.diff tbody tr"
        )
        .nth(i)
        .locator("td")
        .first.inner_text()
        for i in range(admin.locator("table.diff tbody tr").count())
    }
    assert changes == {"added.txt": "added", "notes.txt": "changed", "table.csv": "removed"}
    shot(admin, shots, "compare")


def test_pipelines_jobs_and_datums_with_failures(admin, site, shots):
    admin.goto(site.url + "/pipelines")
    text = admin.locator("table.pipelines").inner_text()
    assert "upper" in text and "broken" in text
    shot(admin, shots, "pipelines")
    admin.goto(site.url + "/pipelines/broken")
    assert admin.locator("table.jobs .state").first.inner_text() == "failure"
    admin.locator("table.jobs a").first.click()
    assert "failure" in admin.locator("h1").inner_text()
    datums = admin.locator("table.datums tbody tr")
    assert datums.count() == 1 and "failed" in datums.first.inner_text()
    assert "3" in datums.first.locator("td").nth(4).inner_text()  # the reason names the exit status
    shot(admin, shots, "job")
    admin.goto(site.url + "/pipelines/upper")
    admin.locator("table.jobs a").first.click()
    assert admin.locator("table.datums .state").first.inner_text() == "success"
    assert "1/1" in admin.locator(".bar").first.inner_text()


def test_log_viewer_follows_a_running_job(admin, site, shots):
    flag = site.tmp / "go"
    site.pipeline(
        {
            "pipeline": {"name": "waiter"},
            "transform": {
                "cmd": ["sh", "-c", f"echo waiting-line; while [ ! -e {flag} ]; do sleep 0.1; done; echo finished-line"]
            },
            "input": {"atom": {"repo": "many", "glob": "/"}},
        }
    )
    try:
        admin.goto(site.url + "/pipelines/waiter")
        wait_for(lambda: admin.reload() or admin.locator("table.jobs a").count() == 1, what="the job to start")
        admin.locator("table.jobs a").first.click()
        admin.locator("a", has_text="Logs").click()
        log = admin.locator("#log")
        wait_for(lambda: "waiting-line" in log.inner_text(), what="the first line")
        assert "finished-line" not in log.inner_text() and log.get_attribute("data-finished") is None
        flag.write_text("go")
        wait_for(lambda: "finished-line" in log.inner_text(), what="the live line")  # no reload
        wait_for(lambda: log.get_attribute("data-finished") == "1", what="the viewer to see the job finish")
        assert admin.locator("#job-state").inner_text() == "success"
        shot(admin, shots, "logs")
    finally:
        flag.touch()
        site.pfs("delete-pipeline", "waiter")


def test_actions_branch_delete_file_delete_commit_and_pipeline(admin, site, shots):
    admin.goto(site.url + "/log/images")
    first = admin.locator("table.commits tbody tr").last  # the older commit
    old = first.locator("code").inner_text()
    admin.once("dialog", lambda d: d.accept("before"))
    with admin.expect_navigation(url=re.compile(r"/repos/images/before/\?done=")):
        first.locator("button", has_text="Branch here").click()
    assert "created branch before" in admin.locator(".flash").inner_text()
    assert "table.csv" in admin.locator("table.files").inner_text()
    assert site.pfs("inspect-commit", "images", "before").find(old) >= 0
    # delete a file on the new branch: a new commit without it
    admin.goto(site.url + "/repos/images/before/table.csv")
    admin.once("dialog", lambda d: d.accept())
    with admin.expect_navigation(url=re.compile(r"/repos/images/before/\?done=")):
        admin.click("button:has-text('Delete file')")
    assert "table.csv" not in admin.locator("table.files").inner_text()
    listing = site.pfs("list-file", "images", "before")
    assert "table.csv" not in listing and "notes.txt" in listing
    # delete that commit again: the branch goes back to where it was made
    admin.goto(site.url + "/log/images?ref=before")
    admin.once("dialog", lambda d: d.accept())
    with admin.expect_navigation(url=re.compile(r"/log/images\?done=")):
        admin.locator("table.commits tbody tr").first.locator("button", has_text="Delete").click()
    assert "table.csv" in site.pfs("list-file", "images", "before")
    # stop, start and restart a pipeline
    admin.goto(site.url + "/pipelines/upper")
    with admin.expect_navigation(url=re.compile(r"/pipelines/upper\?done=")):
        admin.click("button:has-text('Stop')")
    assert "paused" in admin.locator("h1").inner_text()
    assert '"paused"' in site.pfs("inspect-pipeline", "upper", "--json") or "paused" in site.pfs("list-pipeline")
    shot(admin, shots, "paused")
    with admin.expect_navigation(url=re.compile(r"\?done=")):
        admin.click("button:has-text('Start')")
    assert "paused" not in admin.locator("h1").inner_text()
    with admin.expect_navigation(url=re.compile(r"\?done=restart")):
        admin.click("button:has-text('Restart')")
    assert "restart upper" in admin.locator(".flash").inner_text()
    assert "paused" not in site.pfs("list-pipeline")


def test_a_forged_action_is_refused(admin, site):
    r = admin.request.post(
        site.url + "/actions/delete-commit", form={"repo": "images", "commit": "master", "csrf": "x"}
    )
    assert r.status == 403 and "CSRF" in r.text()
    assert len(site.pfs("list-commit", "images").strip().splitlines()) >= 3


def test_a_user_without_access_sees_nothing_of_a_repo(bob, site, shots):
    assert bob.locator("svg.dag").count() == 0 and "no repos you may read" in bob.content()
    bob.goto(site.url + "/repos")
    assert "secret" not in bob.content() and "images" not in bob.content()
    for path in (
        "/repos/secret/master/",
        "/repos/secret/master/plans.txt",
        "/log/secret",
        "/compare/secret",
        "/pipelines/upper",
    ):
        r = bob.goto(site.url + path)
        assert r is not None and r.status == 403, path
        shown = bob.locator("main").inner_text()
        assert "top secret" not in shown and "plans.txt" not in shown and "no such repo" in shown
    r = bob.request.get(site.url + "/raw/secret/master/plans.txt")
    assert r.status == 403 and b"top secret" not in r.body()
    bob.goto(site.url + "/pipelines")
    assert "upper" not in bob.locator("main").inner_text()
    shot(bob, shots, "no-access")


def test_sign_in_refuses_a_bad_code_and_pfs_console_prints_a_link(browser, site):
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(site.url + "/signin")
        page.fill("input[name=code]", "pfs_nonsense")
        page.click("button[type=submit]")
        assert "not valid" in page.locator(".error").inner_text()
        link = site.pfs("console").strip()
        assert link.startswith(site.url + "/signin?otp=")
        page.goto(link)
        assert page.url == site.url + "/" and "admin" in page.locator(".who").inner_text()
        page.goto(link)  # a one-time password works once
        assert "not valid" in page.locator(".error").inner_text()
    finally:
        ctx.close()


def test_nothing_is_served_without_a_session_and_sign_out_ends_it(browser, site):
    import httpx

    with httpx.Client(base_url=site.url) as anon:
        assert anon.get("/repos/images/master/notes.txt").headers["location"].startswith("/signin?next=")
        assert anon.get("/raw/images/master/notes.txt").status_code == 401
        assert anon.post("/actions/delete-commit", data={"repo": "images", "commit": "master"}).status_code == 401
        assert anon.get("/jobs/x/logs.json").status_code == 401
        assert anon.get("/signin?next=https://evil.example/").status_code == 200
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(site.url + "/signin?next=//evil.example/")
        page.fill("input[name=code]", site.admin)
        page.click("button[type=submit]")
        page.wait_for_url(site.url + "/")  # never off the site
        old = {c["name"]: c["value"] for c in ctx.cookies()}["pfs_console"]
        with page.expect_navigation(url=re.compile(r"/signin$")):
            page.click("button:has-text('Sign out')")
        with httpx.Client(base_url=site.url, cookies={"pfs_console": old}) as replay:
            assert replay.get("/raw/images/master/notes.txt").status_code == 401
    finally:
        ctx.close()
