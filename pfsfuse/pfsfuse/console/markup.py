"""HTML building blocks: every value that reaches a page goes through `esc` or `url`."""

from __future__ import annotations

import datetime
import html
from urllib.parse import quote, urlencode


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def url(*segments: str, **query: object) -> str:
    """A path from segments (each quoted, slashes inside a file path kept) and a query."""
    path = "/" + "/".join(quote(s, safe="/") for s in segments if s != "")
    if segments and segments[-1] == "" and not path.endswith("/"):
        path += "/"  # a directory: the root of a commit
    q = {k: v for k, v in query.items() if v is not None and v != ""}
    return path + ("?" + urlencode(q) if q else "")


def when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def state(s: str) -> str:
    return f'<span class="state state-{esc(s)}">{esc(s)}</span>'


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escape them when building the rows)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def form(action: str, csrf: str, fields: dict[str, str], label: str, confirm: str = "", danger: bool = False) -> str:
    """A POST button carrying the session's CSRF token (`confirm` asks first, in console.js)."""
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    attrs = f' data-confirm="{esc(confirm)}"' if confirm else ""
    cls = "btn danger" if danger else "btn"
    return (
        f'<form method="post" action="{esc(action)}" class="inline"{attrs}>'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">{hidden}'
        f'<button class="{cls}" type="submit">{esc(label)}</button></form>'
    )


def page(title: str, body: str, *, user: str = "", csrf: str = "", nav: str = "", flash: str = "") -> str:
    who = ""
    if user:
        who = (
            f'<span class="who">{esc(user)}</span>'
            f'<form method="post" action="/signout" class="inline"><input type="hidden" name="csrf" '
            f'value="{esc(csrf)}"><button class="link" type="submit">Sign out</button></form>'
        )
    tabs = "".join(
        f'<a href="{href}"{" class=on" if nav == key else ""}>{label}</a>'
        for key, href, label in (
            ("lineage", "/", "Lineage"),
            ("repos", "/repos", "Repos"),
            ("pipelines", "/pipelines", "Pipelines"),
        )
    )
    note = f'<div class="flash">{esc(flash)}</div>' if flash else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · pfs</title>"
        '<link rel="stylesheet" href="/static/console.css"><script src="/static/console.js" defer></script>'
        f'</head><body><header><a class="brand" href="/">pfs</a><nav>{tabs}</nav><div class="me">{who}</div></header>'
        f"<main>{note}{body}</main></body></html>"
    )
