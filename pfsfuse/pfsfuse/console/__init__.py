"""The web console: lineage, files at any commit, commits and compare, pipelines, jobs and logs.

Server-rendered pages (`views`, `pages`), one CSS and one script file in `static/`. It is a client
of the daemon like any other: every call carries the signed-in user's token, so the daemon's checks
decide what each user sees. `pfs serve --console HOST:PORT` runs it in the daemon.
"""

from pfsfuse.console.app import make_app

__all__ = ["address", "make_app", "publish"]


def publish(home, bind: str) -> None:
    """Note the console's URL in PFS_HOME, where `pfs console` finds it."""
    import pathlib

    host, _, port = bind.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    (pathlib.Path(home) / "console").write_text(f"http://{host}:{port}\n")


def address(home) -> str | None:
    """The URL of the console the daemon of PFS_HOME serves, if it serves one."""
    import pathlib

    try:
        return (pathlib.Path(home) / "console").read_text().strip() or None
    except OSError:
        return None
