"""`pfs auth`: Pachyderm 1.7's auth verbs (activate, login, ACLs, admins, tokens)."""

from __future__ import annotations

import sys

import click

from pfsfuse.home import Home
from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import when

_SCOPES = ["none", "reader", "writer", "owner"]
_RANK = {s: n for n, s in enumerate(_SCOPES)}


def _subjects(ctx, param, value: str | None) -> list[str]:
    return [s.strip() for s in (value or "").split(",") if s.strip()]


def _read_secret(prompt: str) -> str:
    """A token or password: asked for without echo on a terminal, else read from stdin."""
    if sys.stdin.isatty():
        text = click.prompt(prompt, hide_input=True)
    else:
        text = sys.stdin.readline()
    text = text.strip()
    if not text:
        raise click.ClickException("no token given on standard input")
    return text


_ttl = click.option(
    "--ttl",
    type=click.FloatRange(min=1, max=10 * 365 * 24 * 3600),
    metavar="SECONDS",
    help="How long the token is valid (default: 30 days; a one-time password: 5 minutes).",
)


@click.group("auth")
def auth() -> None:
    """Authentication and per-repo access control (ACLs).

    Once activated, every request needs a token: `pfs auth login` keeps one in $PFS_HOME, or set
    $PFS_AUTH_TOKEN. Each repo has an ACL giving users reader, writer or owner scope; admins may
    do everything.
    """


@auth.command("activate")
@click.option(
    "--admins",
    callback=_subjects,
    required=True,
    metavar="USER[,USER...]",
    help="The first admins (robot users as robot:NAME).",
)
@_ttl
@pass_app
def activate(app: App, admins: list[str], ttl: float | None) -> None:
    """Turn auth on; log this client in as the first admin and print its token."""
    t = app.auth.activate(admins, ttl)
    Home().save_token(t.token)
    app.out.line(f"Token: {t.token}")


@auth.command("deactivate")
@click.confirmation_option(prompt="Delete every ACL, token and admin, and let anyone do anything?")
@pass_app
def deactivate(app: App) -> None:
    """Turn auth off: every ACL, token and admin is forgotten."""
    app.auth.deactivate()
    Home().save_token(None)


@auth.command("login")
@click.argument("user", required=False)
@pass_app
def login(app: App, user: str | None) -> None:
    """Log in with a one-time password (from get-otp) or a token, read from stdin.

    USER, if given, must be whom the password or token is for."""
    t = app.auth.authenticate(_read_secret("One-time password or token"))
    if user is not None and t.subject != user:
        raise click.ClickException(f"that is {t.subject}'s, not {user}'s")
    Home().save_token(t.token)
    app.out.line(f"Logged in as {t.subject} until {when(t.expires)}")


@auth.command("logout")
@pass_app
def logout(app: App) -> None:
    """Revoke this client's token and forget it."""
    from pfsfuse.metadata.errors import FailedPrecondition, NotFound, Unauthenticated

    try:
        app.auth.revoke_token()
    except (FailedPrecondition, NotFound, Unauthenticated):
        pass  # already expired or revoked, or auth is off: forgetting it is all there is to do
    Home().save_token(None)


@auth.command("whoami")
@json_option
@pass_app
def whoami(app: App, as_json: bool) -> None:
    """Who this client is logged in as."""
    views.whoami(app.auth, app.out, as_json)


@auth.command("check")
@click.argument("scope", type=click.Choice(_SCOPES, case_sensitive=False))
@click.argument("repo")
@pass_app
def check(app: App, scope: str, repo: str) -> None:
    """Whether you have at least SCOPE on REPO: prints true (exit 0) or false (exit 1)."""
    ok = _RANK[app.auth.get_scope(repo)] >= _RANK[scope.lower()]
    app.out.line("true" if ok else "false")
    if not ok:
        sys.exit(1)


@auth.command("get")
@click.argument("user_repo", nargs=-1, required=True, metavar="[USER] REPO")
@json_option
@pass_app
def get(app: App, user_repo: tuple[str, ...], as_json: bool) -> None:
    """USER's scope on REPO; or, without USER, REPO's whole ACL."""
    if len(user_repo) > 2:
        raise click.UsageError("expected [USER] REPO")
    if len(user_repo) == 2:
        scope = app.auth.get_scope(user_repo[1], user_repo[0])
        return app.out.json({"scope": scope}) if as_json else app.out.line(scope.upper())
    acl = app.auth.get_acl(user_repo[0])
    if as_json:
        return app.out.json(acl)
    for entry in acl:
        app.out.line(f"{entry.subject}: {entry.scope.upper()}")


@auth.command("set")
@click.argument("user")
@click.argument("scope", type=click.Choice(_SCOPES, case_sensitive=False))
@click.argument("repo")
@pass_app
def set_(app: App, user: str, scope: str, repo: str) -> None:
    """Give USER SCOPE on REPO (none removes them from its ACL)."""
    app.auth.set_scope(repo, user, scope.lower())


@auth.command("list-admins")
@json_option
@pass_app
def list_admins(app: App, as_json: bool) -> None:
    """The admins, who may do everything."""
    admins = app.auth.list_admins()
    if as_json:
        return app.out.json(admins)
    for a in admins:
        app.out.line(a)


@auth.command("modify-admins")
@click.option("--add", callback=_subjects, metavar="USER[,USER...]", help="Make these admins.")
@click.option("--remove", callback=_subjects, metavar="USER[,USER...]", help="Make these no longer admins.")
@pass_app
def modify_admins(app: App, add: list[str], remove: list[str]) -> None:
    """Add or remove admins."""
    if not add and not remove:
        raise click.UsageError("give --add, --remove or both")
    app.auth.modify_admins(add, remove)


@auth.command("get-auth-token")
@click.argument("user")
@_ttl
@pass_app
def get_auth_token(app: App, user: str, ttl: float | None) -> None:
    """A new token for USER (admins: anyone, e.g. robot:ci; others: themselves)."""
    t = app.auth.get_auth_token(user, ttl)
    app.out.line("New credentials:")
    app.out.line(f"Subject: {t.subject}")
    app.out.line(f"Token: {t.token}")


@auth.command("get-otp")
@click.argument("user")
@_ttl
@pass_app
def get_otp(app: App, user: str, ttl: float | None) -> None:
    """A one-time password for USER to log in with (pfs auth login)."""
    t = app.auth.get_otp(user, ttl)
    app.out.line(f"One-time password: {t.token} (for {t.subject}, until {when(t.expires)})")


@auth.command("use-auth-token")
@pass_app
def use_auth_token(app: App) -> None:
    """Keep the token read from stdin as this client's (in $PFS_HOME)."""
    Home().save_token(_read_secret("Token"))


@auth.command("revoke")
@pass_app
def revoke(app: App) -> None:
    """Revoke the token read from stdin (an admin: anyone's; others: their own)."""
    app.auth.revoke_token(_read_secret("Token"))
