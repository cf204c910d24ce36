"""Repo pages: the repo list, the file browser at any ref, the commit log and the compare view."""

from __future__ import annotations

import posixpath

from pfsfuse.console import previews
from pfsfuse.console.conn import Conn
from pfsfuse.console.markup import esc, form, size, table, url, when
from pfsfuse.metadata.errors import NotFound

PAGE = 200  # directory entries a page
COMMITS = 50  # commits a page of the log


def repo_list(conn: Conn, csrf: str) -> str:
    rows = [
        [
            f'<a href="{esc(url("repos", r.name, "master", ""))}">{esc(r.name)}</a>',
            esc(size(r.size)),
            esc(", ".join(r.branches)),
            esc(when(r.created)),
            esc(r.description),
        ]
        for r in conn.repos()
    ]
    body = table(["repo", "size", "branches", "created", "description"], rows, "repos") if rows else ""
    return "<h1>Repos</h1>" + (body or '<p class="muted">no repos you may read</p>')


def _crumbs(repo: str, ref: str, path: str) -> str:
    parts = [f'<a href="{esc(url("repos", repo, ref, ""))}">{esc(repo)}@{esc(ref)}</a>']
    walked = ""
    for name in [p for p in path.split("/") if p]:
        walked = posixpath.join(walked, name)
        parts.append(f'<a href="{esc(url("repos", repo, ref, walked))}">{esc(name)}</a>')
    return '<nav class="crumbs">' + " / ".join(parts) + "</nav>"


def _repo_bar(conn: Conn, repo: str, ref: str) -> str:
    branches = conn.api.list_branch(repo)
    opts = "".join(
        f'<a class="chip{" on" if b.name == ref else ""}" href="{esc(url("repos", repo, b.name, ""))}">'
        f"{esc(b.name)}</a>"
        for b in branches
    )
    return (
        f'<div class="bar"><span class="label">branches</span>{opts or "<span class=muted>none</span>"}'
        f'<a class="btn" href="{esc(url("log", repo, ref=ref))}">Commits</a>'
        f'<a class="btn" href="{esc(url("compare", repo, new=ref, old=ref + "^"))}">Compare</a></div>'
    )


def browse(conn: Conn, csrf: str, repo: str, ref: str, path: str, after: str | None) -> str:
    """A directory (paged, `after` the last name shown) or a file's preview."""
    conn.check(repo)
    try:
        commit = conn.api.inspect_commit(repo, ref)
    except NotFound:
        branches = [b.name for b in conn.api.list_branch(repo)]
        if path or (branches and ref not in branches):
            raise
        conn.api.inspect_repo(repo)  # a repo or branch without commits yet: say so, not "not found"
        return f'<h1>{esc(repo)}</h1>{_repo_bar(conn, repo, ref)}<p class="muted">no commits on {esc(ref)} yet</p>'
    info = conn.api.inspect_file(repo, commit.id, path) if path else None
    head = (
        f"<h1>{esc(repo)}</h1>{_repo_bar(conn, repo, ref)}{_crumbs(repo, ref, path)}"
        f'<p class="muted">commit <a href="{esc(url("repos", repo, commit.id, path))}">'
        f"<code>{esc(commit.id)}</code></a>"
        f"{' (open)' if commit.finished is None else ''} · {esc(when(commit.finished or commit.started))}"
        f"{' · ' + esc(commit.description) if commit.description else ''}</p>"
    )
    if info is not None and info.type == "file":
        raw = url("raw", repo, commit.id, path)
        actions = f'<a class="btn" href="{esc(url("raw", repo, commit.id, path, download=1))}">Download</a>'
        if any(b.name == ref for b in conn.api.list_branch(repo)):  # a branch: deleting makes a commit on it
            actions += form(
                "/actions/delete-file",
                csrf,
                {"repo": repo, "branch": ref, "path": path},
                "Delete file",
                confirm=f"Delete {path} from {repo}@{ref}? This makes a new commit.",
                danger=True,
            )
        preview = previews.render(conn.api, repo, commit.id, path, info.size, raw)
        return head + f'<div class="bar">{esc(size(info.size))} {actions}</div>{preview}'
    entries = conn.api.list_file(repo, commit.id, path, start_after=after, limit=PAGE + 1)
    more = len(entries) > PAGE
    entries = entries[:PAGE]
    rows = []
    for e in entries:
        name = posixpath.basename(e.path)
        icon = "📁" if e.type == "dir" else "📄"
        detail = f"{e.children} entries" if e.type == "dir" else size(e.size)
        rows.append([f'{icon} <a href="{esc(url("repos", repo, ref, e.path))}">{esc(name)}</a>', esc(detail)])
    listing = table(["name", "size"], rows, "files") if rows else '<p class="muted">empty</p>'
    pager = ""
    if after:
        pager += f'<a class="btn" href="{esc(url("repos", repo, ref, path))}">First page</a>'
    if more:
        nxt = url("repos", repo, ref, path, after=posixpath.basename(entries[-1].path))
        pager += f'<a class="btn next" href="{esc(nxt)}">Next {PAGE} →</a>'
    return head + listing + (f'<div class="pager">{pager}</div>' if pager else "")


def log(conn: Conn, csrf: str, repo: str, ref: str) -> str:
    conn.check(repo)
    commits = conn.api.list_commit(repo, ref, number=COMMITS + 1)
    more = len(commits) > COMMITS
    commits = commits[:COMMITS]
    rows = []
    for c in commits:
        acts = form(
            "/actions/branch", csrf, {"repo": repo, "commit": c.id}, "Branch here…", confirm="prompt:New branch name"
        ) + form(
            "/actions/delete-commit",
            csrf,
            {"repo": repo, "commit": c.id},
            "Delete",
            confirm=f"Delete commit {c.id} and the commits that depend on it?",
            danger=True,
        )
        compare = url("compare", repo, new=c.id, old=c.parent) if c.parent else ""
        rows.append(
            [
                f'<a href="{esc(url("repos", repo, c.id, ""))}"><code>{esc(c.id[:12])}</code></a>',
                esc(c.branch or ""),
                esc(when(c.finished or c.started)) + ("" if c.finished else " (open)"),
                esc(size(c.size)),
                esc(c.description),
                (f'<a href="{esc(compare)}">changes</a>' if compare else "first"),
                acts,
            ]
        )
    older = ""
    if more and commits[-1].parent:
        href = url("log", repo, ref=commits[-1].parent)
        older = f'<div class="pager"><a class="btn next" href="{esc(href)}">Older →</a></div>'
    return (
        f'<h1>{esc(repo)} · commits</h1>{_repo_bar(conn, repo, ref)}<p class="muted">from {esc(ref)}</p>'
        + table(["commit", "branch", "finished", "size", "description", "", ""], rows, "commits")
        + older
    )


def compare(conn: Conn, repo: str, new: str, old: str) -> str:
    conn.check(repo)
    form_html = (
        f'<form class="compare" method="get" action="{esc(url("compare", repo))}">'
        f'<label>old <input name="old" value="{esc(old)}"></label> '
        f'<label>new <input name="new" value="{esc(new)}"></label> <button class="btn">Compare</button></form>'
    )
    a, b = conn.api.inspect_commit(repo, old), conn.api.inspect_commit(repo, new)
    diff = conn.api.diff_file(repo, b.id, "", repo, a.id)
    olds = {f.path: f for f in diff.old if f.type == "file"}
    news = {f.path: f for f in diff.new if f.type == "file"}
    rows = []
    for path in sorted(olds.keys() | news.keys()):
        if path not in olds:
            change, ref = "added", b.id
        elif path not in news:
            change, ref = "removed", a.id
        elif olds[path].hash != news[path].hash:
            change, ref = "changed", b.id
        else:
            continue
        f = news.get(path) or olds[path]
        rows.append(
            [
                f'<span class="change change-{change}">{change}</span>',
                f'<a href="{esc(url("repos", repo, ref, path))}">{esc(path)}</a>',
                esc(size(f.size)),
            ]
        )
    counts = {k: sum(1 for r in rows if f"change-{k}" in r[0]) for k in ("added", "changed", "removed")}
    summary = " · ".join(f"{n} {k}" for k, n in counts.items())
    return (
        f"<h1>{esc(repo)} · compare</h1>{form_html}"
        f'<p class="muted"><code>{esc(a.id[:12])}</code> → <code>{esc(b.id[:12])}</code>: {esc(summary)}</p>'
        + (table(["", "file", "size"], rows, "diff") if rows else '<p class="muted">no differences</p>')
    )
