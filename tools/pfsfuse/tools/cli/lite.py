"""The light path of the common read-only verbs, taken before click is imported.

`pfs list-repo` and its like spent most of their time importing click, msgspec, h11 and the
records. Here their few arguments are read by hand, the local daemon is asked over its unix socket
by the light client (`pfsfuse.api.lite`, standard library only), and the verbs' bodies shared with
the click commands (`views.py`) print the same bytes. Anything else returns None and the full CLI
runs instead, so behaviour never diverges: another verb, an option or form not listed here
(`--help`, `-h`, `--`, a bad number), a daemon over TCP, a client.json (`pfs auth login`'s token)
it cannot read, a daemon that does not answer (the full CLI starts it), a file worth a progress
bar or read faster from the store directly, JSON the standard library would print otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pfsfuse.api.lite import LiteClient, loads
from pfsfuse.metadata.errors import PfsError
from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.output import NotPlain, Output, oserror_message

# A file at least this large is read by the full client: straight from the store when it may, with
# a progress bar on a terminal; start-up is then a small part of the time.
GET_MAX = 16 << 20


class _Fallback(Exception):
    """The light path does not handle this command: the full CLI does."""


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise _Fallback from None
    if n < 0:
        raise _Fallback
    return n


# verb: (arguments (name, required), flags, options with a value (their conversion), whether a
# word REPO@REF[:PATH] is spread over REPO REF PATH, as RefPathCommand does)
_JSON = {"--json": "as_json"}
_VERBS: dict[
    str, tuple[list[tuple[str, bool]], dict[str, str], dict[str, tuple[str, Callable[[str], object]]], bool]
] = {
    "list-repo": ([], {"-a": "show_all", "--all": "show_all", **_JSON}, {}, False),
    "inspect-repo": ([("name", True)], _JSON, {}, False),
    "list-branch": ([("repo", True)], _JSON, {}, False),
    "list-commit": (
        [("repo", True), ("ref", False)],
        _JSON,
        {"-n": ("number", _count), "--number": ("number", _count), "--from": ("since", str)},
        False,
    ),
    "inspect-commit": ([("repo", True), ("ref", True)], _JSON, {}, False),
    "list-file": ([("repo", True), ("ref", True), ("path", False)], _JSON, {"--history": ("history", str)}, True),
    "inspect-file": ([("repo", True), ("ref", True), ("path", True)], _JSON, {}, True),
    "get-file": ([("repo", True), ("ref", True), ("path", True)], {}, {}, True),
    "list-pipeline": ([], {"--spec": "show_spec", **_JSON}, {}, False),
    "list-job": ([], _JSON, {"-p": ("pipeline", str), "--pipeline": ("pipeline", str)}, False),
    "version": ([], {"--client-only": "client_only"}, {}, False),
    "auth whoami": ([], _JSON, {}, False),
}


def _parse(verb: str, words: list[str]) -> dict:
    """The verb's arguments and options by name, as click would give them; _Fallback for
    anything this parser does not know (click then reports it, or does it)."""
    arguments, flags, options, spread = _VERBS[verb]
    found: dict = dict.fromkeys(flags.values(), False)
    found.update({name: None for name, _ in options.values()})
    positional: list[str] = []
    it = iter(words)
    for word in it:
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            if name in options and eq:
                pass
            elif word in options:
                following = next(it, None)
                if following is None:
                    raise _Fallback
                value = following
            elif word in flags:
                found[flags[word]] = True
                continue
            else:
                raise _Fallback  # --help, --, an option we do not know
            key, convert = options[name]
            found[key] = convert(value)
            continue
        positional.append(word)
    if spread and positional and "@" in positional[0]:
        from pfsfuse.metadata import refs  # (it loads re)

        m = refs.split(positional[0])
        if m is not None:
            positional[:1] = [m[0], m[1]] + ([m[2]] if m[2] is not None else [])
    if len(positional) > len(arguments) or len(positional) < sum(required for _, required in arguments):
        raise _Fallback
    for (name, _), value in zip(arguments, positional, strict=False):
        found[name] = value
    for name, _ in arguments[len(positional) :]:
        found[name] = None
    return found


def _client() -> LiteClient:
    """A client of the local daemon's unix socket, connected; _Fallback where the full client is
    needed (TCP or TLS, a client.json it cannot read, no daemon answering)."""
    address = os.environ.get("PFS_ADDRESS") or os.environ.get("ADDRESS")  # as the group reads them
    home = os.path.abspath(os.path.expanduser(os.environ.get("PFS_HOME") or "~/.pfs"))
    if not address:
        address = f"unix:{home}/pfs.sock"
    if not address.startswith("unix:"):
        raise _Fallback
    client = LiteClient(address, os.environ.get("PFS_AUTH_TOKEN") or _kept_token(home))
    try:
        client.connect()
    except OSError:
        raise _Fallback from None
    return client


def _kept_token(home: str) -> str | None:
    """The token `pfs auth login` kept in PFS_HOME's client.json, as Home.token reads it; a file
    it would refuse is left to it."""
    try:
        with open(os.path.join(home, "client.json"), "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        raise _Fallback from None
    try:
        kept = loads(data)
    except ValueError:
        raise _Fallback from None
    token = kept.get("token") if isinstance(kept, dict) else 0
    if token is not None and not isinstance(token, str):
        raise _Fallback
    return token


def _get_file(client: LiteClient, repo: str, ref: str, path: str) -> None:
    """get-file of one file (or a glob's files) to stdout, as file.get_file writes it."""
    size, pieces = client.open_file(repo, ref, path)
    if size is not None and size >= GET_MAX:
        raise _Fallback  # (the client is closed unread)
    out = sys.stdout.buffer
    for piece in pieces:
        out.write(piece)
    out.flush()


def _run(verb: str, args: dict, client: LiteClient | None) -> None:
    out = Output()
    if verb == "version":
        return views.version(None if args["client_only"] else client, out)
    assert client is not None
    if verb == "list-repo":
        return views.list_repo(client, out, args["show_all"], args["as_json"])
    if verb == "inspect-repo":
        return views.inspect_repo(client, out, args["name"], args["as_json"])
    if verb == "list-branch":
        return views.list_branch(client, out, args["repo"], args["as_json"])
    if verb == "list-commit":
        return views.list_commit(client, out, args["repo"], args["ref"], args["number"], args["since"], args["as_json"])
    if verb == "inspect-commit":
        return views.inspect_commit(client, out, args["repo"], args["ref"], args["as_json"])
    if verb == "list-file":
        versions = views.history_count(args["history"])
        if versions is None:
            raise _Fallback  # click's error
        return views.list_file(client, out, args["repo"], args["ref"], args["path"] or "", versions, args["as_json"])
    if verb == "inspect-file":
        return views.inspect_file(client, out, args["repo"], args["ref"], args["path"], args["as_json"])
    if verb == "list-pipeline":
        return views.list_pipeline(client, out, args["show_spec"], args["as_json"])
    if verb == "list-job":
        return views.list_job(client, out, args["pipeline"], None, args["as_json"])
    if verb == "auth whoami":
        return views.whoami(client, out, args["as_json"])
    if verb == "get-file":
        return _get_file(client, args["repo"], args["ref"], args["path"])
    raise _Fallback


def run(argv: list[str]) -> int | None:
    """Run `pfs ARGV` on the light path and return its exit status, or None if the full CLI must
    run it (nothing has been printed then)."""
    verb, words = (" ".join(argv[:2]), argv[2:]) if argv[:1] == ["auth"] else (argv[0] if argv else "", argv[1:])
    if verb not in _VERBS:
        return None
    client = None
    try:
        args = _parse(verb, words)
        if verb != "version" or not args["client_only"]:
            client = _client()
        _run(verb, args, client)
        return 0
    except _Fallback:
        return None
    except NotPlain:
        return None
    except PfsError as e:
        sys.stderr.write(f"Error: {e}\n")  # as click shows a ClickException
        return 1
    except BrokenPipeError:
        # As click does: the reader went away; say nothing more to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as e:
        sys.stderr.write(f"Error: {oserror_message(e)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nAborted!\n")
        return 1
    finally:
        if client is not None:
            client.close()
