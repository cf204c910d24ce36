"""The console's routes: sign-in and sessions, the views, the raw file reads and the actions.

Handlers are plain functions (Starlette runs them in threads): each one opens a `Conn` with the
session's token, so whatever the daemon refuses the user, the console refuses too.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pfsfuse.console import files, jobs
from pfsfuse.console.conn import Conn
from pfsfuse.console.markup import esc, page
from pfsfuse.console.previews import IMAGES
from pfsfuse.console.session import COOKIE, Session, Sessions
from pfsfuse.home import Home
from pfsfuse.metadata import names
from pfsfuse.metadata import refs as ref_syntax
from pfsfuse.metadata.errors import InvalidArgument, NotFound, PermissionDenied, PfsError, Unauthenticated

STATIC = Path(__file__).parent / "static"
_STATUS = {InvalidArgument: 400, Unauthenticated: 401, PermissionDenied: 403, NotFound: 404}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


_FORM_MAX = 64 * 1024


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the console's forms send nothing else), read with the standard library:
    Starlette's parser would need python-multipart for these few fields."""
    body = await request.body()
    if len(body) > _FORM_MAX:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _status(e: PfsError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(e, cls)), 409)


def _repo(name: str) -> str:
    names.repo_name(name)
    return name


def _ref(ref: str) -> str:
    ref_syntax.parse(ref)
    return ref


class Console:
    def __init__(self, address: str, home: Home | None = None):
        self.address, self.home = address, home
        self.sessions = Sessions(address)

    # -- sessions -------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        s = self.sessions.get(request.cookies.get(COOKIE))
        return s

    def _cookie(self, response: Response, sid: str) -> Response:
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
        return response

    def signin_page(self, request: Request) -> Response:
        if not self.sessions.auth_active():
            sid, _ = self.sessions.open_anonymous()
            return self._cookie(RedirectResponse(_next(request), 303), sid)
        otp = request.query_params.get("otp")
        if otp:  # the link `pfs console` prints: a one-time password, used up by this visit
            return self._sign_in(otp, _next(request))
        return HTMLResponse(_signin_html(_next(request), ""), headers=_HEADERS)

    async def signin(self, request: Request) -> Response:
        data = await _form(request)
        code, nxt = str(data.get("code", "")), _safe_next(str(data.get("next", "/")))
        from anyio.to_thread import run_sync

        return await run_sync(lambda: self._sign_in(code, nxt))

    def _sign_in(self, code: str, nxt: str) -> Response:
        try:
            sid, _ = self.sessions.sign_in(code)
        except PfsError as e:
            return HTMLResponse(_signin_html(nxt, str(e)), status_code=401, headers=_HEADERS)
        return self._cookie(RedirectResponse(nxt, 303), sid)

    async def signout(self, request: Request) -> Response:
        data = await _form(request)
        s = self.session(request)
        if s is not None and s.csrf_ok(str(data.get("csrf", ""))):
            self.sessions.sign_out(request.cookies.get(COOKIE))
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- views ------------------------------------------------------------------------------------

    def view(self, nav: str, render: Callable[[Request, Conn, Session], str], title: Callable[[Request], str]):
        def handler(request: Request) -> Response:
            s = self.session(request)
            if s is None:
                return RedirectResponse("/signin?next=" + quote(request.url.path + _query(request)), 303)
            conn = Conn(self.address, self.home, s.token, s.admin)
            flash = request.query_params.get("done", "")
            try:
                body, status = render(request, conn, s), 200
            except PfsError as e:
                body, status = f'<h1>{esc(_status(e))}</h1><p class="error">{esc(e)}</p>', _status(e)
            finally:
                conn.close()
            html = page(title(request), body, user=s.subject or "", csrf=s.csrf, nav=nav, flash=flash)
            return HTMLResponse(html, status_code=status, headers=_HEADERS)

        return handler

    def raw(self, request: Request) -> Response:
        """A file's bytes: inline for images, else as a download."""
        s = self.session(request)
        if s is None:
            return Response("sign in first\n", 401)
        p = request.path_params
        conn = Conn(self.address, self.home, s.token, s.admin)
        try:
            repo, ref, path = _repo(p["repo"]), _ref(p["ref"]), p["path"]
            conn.check(repo)
            commit = conn.api.inspect_commit(repo, ref)
            info = conn.api.inspect_file(repo, commit.id, path)
            if info.type != "file":
                raise InvalidArgument(f"{path} is a {info.type}, not a file")
            chunks = conn.api.get_file(repo, commit.id, path)
        except PfsError as e:
            conn.close()
            return Response(f"{e}\n", _status(e), media_type="text/plain")
        ext = posixpath.splitext(path)[1].lower()
        name = quote(posixpath.basename(path))
        if ext in IMAGES and not request.query_params.get("download"):
            kind, disposition = IMAGES[ext], "inline"
        else:
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            disposition = f"attachment; filename*=UTF-8''{name}"

        def stream():
            try:
                yield from chunks
            finally:
                conn.close()

        headers = {**_HEADERS, "Content-Disposition": disposition, "Content-Length": str(info.size)}
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return StreamingResponse(stream(), media_type=kind, headers=headers)

    def logs_json(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return JSONResponse({"error": "sign in first"}, 401)
        conn = Conn(self.address, self.home, s.token, s.admin)
        try:
            after = int(request.query_params.get("after", "0"))
            return JSONResponse(jobs.log_lines(conn, request.path_params["job"], max(0, after)))
        except ValueError:
            return JSONResponse({"error": "after is a number of lines"}, 400)
        except PfsError as e:
            return JSONResponse({"error": str(e)}, _status(e))
        finally:
            conn.close()

    # -- actions ------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return Response("sign in first\n", 401, media_type="text/plain")
        if request.path_params["name"] not in _ACTIONS:
            return Response(f"no such action; one of: {', '.join(sorted(_ACTIONS))}\n", 404)
        data = await _form(request)
        if not s.csrf_ok(data.get("csrf")):
            return Response("the form is stale or forged (CSRF token mismatch): reload the page\n", 403)
        from anyio.to_thread import run_sync

        return await run_sync(lambda: self._act(request.path_params["name"], data, s))

    def _act(self, name: str, data: dict[str, str], s: Session) -> Response:
        conn = Conn(self.address, self.home, s.token, s.admin)
        try:
            where, done = _ACTIONS[name](conn, data)
        except KeyError as e:
            return Response(f"missing field {e}\n", 400, media_type="text/plain")
        except PfsError as e:
            body = f'<h1>{esc(_status(e))}</h1><p class="error">{esc(e)}</p>'
            return HTMLResponse(page("error", body, user=s.subject, csrf=s.csrf), _status(e), headers=_HEADERS)
        finally:
            conn.close()
        sep = "&" if "?" in where else "?"
        return RedirectResponse(f"{where}{sep}done={quote(done)}", 303)


def _create_branch(conn: Conn, d: dict[str, str]) -> tuple[str, str]:
    repo, branch, commit = _repo(d["repo"]), d["branch"].strip(), d["commit"]
    names.branch_name(branch)
    conn.check(repo)
    conn.api.create_branch(repo, branch, commit)
    return f"/repos/{quote(repo)}/{quote(branch)}/", f"created branch {branch} at {commit[:12]}"


def _delete_file(conn: Conn, d: dict[str, str]) -> tuple[str, str]:
    repo, branch, path = _repo(d["repo"]), d["branch"], d["path"]
    conn.check(repo)
    from pfsfuse.api.types import Delete

    r = conn.api.write_files(repo, branch, [Delete(path)])
    parent = posixpath.dirname(path)
    return f"/repos/{quote(repo)}/{quote(branch)}/{quote(parent)}", f"deleted {path} in commit {r.commit[:12]}"


def _delete_commit(conn: Conn, d: dict[str, str]) -> tuple[str, str]:
    repo, commit = _repo(d["repo"]), d["commit"]
    conn.check(repo)
    gone = conn.api.delete_commit(repo, commit)
    return f"/log/{quote(repo)}", f"deleted {len(gone)} commit(s)"


def _pipeline(conn: Conn, d: dict[str, str]) -> tuple[str, str]:
    name, op = d["pipeline"], d["op"]
    conn.pipeline(name)
    if op == "stop":
        conn.pps.stop_pipeline(name)
    elif op == "start":
        conn.pps.start_pipeline(name)
    elif op == "restart":
        conn.pps.stop_pipeline(name)
        conn.pps.start_pipeline(name)
    else:
        raise InvalidArgument(f"unknown pipeline action {op!r}: start, stop or restart")
    return f"/pipelines/{quote(name)}", f"{op} {name}: done"


_ACTIONS = {
    "branch": _create_branch,
    "delete-file": _delete_file,
    "delete-commit": _delete_commit,
    "pipeline": _pipeline,
}


def _query(request: Request) -> str:
    return "?" + request.url.query if request.url.query else ""


def _safe_next(nxt: str) -> str:
    """Only a path of this site: never an open redirect."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


def _next(request: Request) -> str:
    return _safe_next(request.query_params.get("next", "/"))


def _signin_html(nxt: str, error: str) -> str:
    err = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        '<div class="signin"><h1>Sign in</h1>'
        '<p class="muted">with a token (<code>pfs auth get-auth-token</code>) or a one-time password '
        "(<code>pfs auth get-otp</code>), or follow the link <code>pfs console</code> prints.</p>"
        f'{err}<form method="post" action="/signin"><input type="hidden" name="next" value="{esc(nxt)}">'
        '<input type="password" name="code" placeholder="token or one-time password" autofocus required '
        'autocomplete="off"> <button class="btn" type="submit">Sign in</button></form></div>'
    )
    return page("Sign in", body)


def make_app(address: str, home: Home | None = None) -> Starlette:
    """The console for the daemon at `address` (`home`: its PFS_HOME, for direct chunk reads)."""
    c = Console(address, home)
    p = lambda r, k: r.path_params[k]  # noqa: E731
    q = lambda r, k, d="": r.query_params.get(k, d)  # noqa: E731
    routes = [
        Route("/signin", c.signin_page, methods=["GET"]),
        Route("/signin", c.signin, methods=["POST"]),
        Route("/signout", c.signout, methods=["POST"]),
        Route("/", c.view("lineage", lambda r, conn, s: jobs.lineage(conn), lambda r: "Lineage")),
        Route("/repos", c.view("repos", lambda r, conn, s: files.repo_list(conn, s.csrf), lambda r: "Repos")),
        Route(
            "/repos/{repo}",
            lambda r: RedirectResponse(f"/repos/{quote(p(r, 'repo'))}/master/", 303),
        ),
        Route(
            "/repos/{repo}/{ref}/{path:path}",
            c.view(
                "repos",
                lambda r, conn, s: files.browse(
                    conn, s.csrf, _repo(p(r, "repo")), _ref(p(r, "ref")), p(r, "path").strip("/"), q(r, "after") or None
                ),
                lambda r: f"{p(r, 'repo')}@{p(r, 'ref')}/{p(r, 'path')}",
            ),
        ),
        Route(
            "/log/{repo}",
            c.view(
                "repos",
                lambda r, conn, s: files.log(conn, s.csrf, _repo(p(r, "repo")), _ref(q(r, "ref", "master"))),
                lambda r: f"{p(r, 'repo')} commits",
            ),
        ),
        Route(
            "/compare/{repo}",
            c.view(
                "repos",
                lambda r, conn, s: files.compare(
                    conn, _repo(p(r, "repo")), _ref(q(r, "new", "master")), _ref(q(r, "old", "master^"))
                ),
                lambda r: f"{p(r, 'repo')} compare",
            ),
        ),
        Route("/raw/{repo}/{ref}/{path:path}", c.raw),
        Route("/pipelines", c.view("pipelines", lambda r, conn, s: jobs.pipeline_list(conn), lambda r: "Pipelines")),
        Route(
            "/pipelines/{name}",
            c.view("pipelines", lambda r, conn, s: jobs.pipeline(conn, s.csrf, p(r, "name")), lambda r: p(r, "name")),
        ),
        Route("/jobs/{job}", c.view("pipelines", lambda r, conn, s: jobs.job(conn, p(r, "job")), lambda r: "Job")),
        Route(
            "/jobs/{job}/logs",
            c.view("pipelines", lambda r, conn, s: jobs.logs_page(conn, p(r, "job")), lambda r: "Logs"),
        ),
        Route("/jobs/{job}/logs.json", c.logs_json),
        Route("/actions/{name}", c.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
