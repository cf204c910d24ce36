"""The front door every API route goes through.

A route is an `Endpoint`: its path, its argument schema (a msgspec Struct, see `wire`), what it
needs of its caller (`Need`), and its handler. `routes()` wraps each one the same way: it
identifies the caller from the request's bearer token, decodes and validates the arguments,
checks the caller's scope, runs the handler, and turns whatever goes wrong into an HTTP status
with a one-line message. Adding a route is writing its handler and its schema, nothing else.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from pfsfuse.api import wire
from pfsfuse.metadata.errors import DataLoss, InvalidArgument, NotFound, PfsError, TooLarge, Unauthenticated

log = logging.getLogger("pfsfuse.server")

# Scopes on a repo, each including the ones before it (as Pachyderm 1.7's ACLs).
NONE, READER, WRITER, OWNER = "none", "reader", "writer", "owner"
SCOPES = (NONE, READER, WRITER, OWNER)


@dataclass(frozen=True)
class Need:
    """What a call needs of its caller."""

    signed_in: bool = True  # a valid token (when auth is active)
    admin: bool = False
    repos: tuple[tuple[str, str], ...] = ()  # (repo, least scope)
    subject: str | None = None  # only this subject (or an admin): a pipeline's own calls

    def __add__(self, other: Need) -> Need:
        return Need(
            self.signed_in or other.signed_in,
            self.admin or other.admin,
            self.repos + other.repos,
            self.subject or other.subject,
        )


PUBLIC = Need(signed_in=False)
SIGNED_IN = Need()
ADMIN = Need(admin=True)


def reads(*repos: str | None) -> Need:
    return Need(repos=tuple((r, READER) for r in repos if r))


def writes(*repos: str | None) -> Need:
    return Need(repos=tuple((r, WRITER) for r in repos if r))


def owns(*repos: str | None) -> Need:
    return Need(repos=tuple((r, OWNER) for r in repos if r))


@dataclass(frozen=True)
class Caller:
    subject: str  # "" when auth is not active: everyone may do everything
    admin: bool
    token: str | None = None  # its hash's hex, to revoke it


class Gate(Protocol):
    """Who a token belongs to, whether they may do a thing, and the ACLs that follow from what
    they did (`pfsfuse.auth.Auth`)."""

    def identify(self, token: str | None) -> Caller: ...

    def check(self, caller: Caller, need: Need) -> None: ...

    def repo_made(self, caller: Caller, repo: str) -> None: ...

    def repo_gone(self, repo: str) -> None: ...

    def pipeline_made(self, caller: Caller, name: str, outputs: list[str], inputs: list[str], new: bool) -> None: ...

    def pipeline_gone(self, name: str) -> None: ...

    def reload(self) -> None: ...


@dataclass
class Call:
    """What a handler gets: the request, its decoded arguments and who made it."""

    request: Request
    args: Any
    caller: Caller
    gate: Gate

    def check(self, need: Need) -> None:
        """A further check, for what only the body reveals (a write's copy sources)."""
        self.gate.check(self.caller, need)

    def may_read(self, repo: str) -> bool:
        """Whether the caller may read `repo`: what a listing shows them of it."""
        try:
            self.gate.check(self.caller, reads(repo))
        except PfsError:
            return False
        return True


@dataclass(frozen=True)
class Endpoint:
    path: str
    handler: Callable[[Call], Awaitable[Response]]
    access: Callable[[Any], Need | Awaitable[Need]]  # from the decoded arguments
    schema: type[msgspec.Struct] | None = None  # None: no arguments
    query: bool = False  # the arguments are the query string (the body is data)
    method: str = "POST"
    by_hash: bool = False  # names objects by their hash: an unknown one is "not found"


def json(result: Any) -> Response:
    return Response(msgspec.json.encode(result), media_type="application/json")


def packed(request: Request) -> bool:
    """Whether the caller takes msgpack (pfsfuse's own clients: smaller, and about a third
    faster to decode, than JSON)."""
    return request.headers.get("accept") == wire.MSGPACK


def answer(request: Request, result: Any) -> Response:
    """An RPC's result in the format the caller accepts: msgpack or JSON."""
    if packed(request):
        return Response(msgspec.msgpack.encode(result), media_type=wire.MSGPACK)
    return json(result)


def error(e: BaseException) -> Response:
    if not isinstance(e, PfsError):
        log.error("internal error", exc_info=e)
        e = PfsError(f"internal error: {type(e).__name__}: {e}")
    # One line, whatever a caller's names put in it: control characters are shown escaped.
    message = _CONTROL.sub(lambda m: repr(m.group())[1:-1], e.message)
    body = msgspec.json.encode(wire.ErrorBody(e.kind, message))
    return Response(body, status_code=e.status, media_type="application/json")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ARGUMENTS = 64 << 20  # bytes of a route's JSON arguments: bounds what one request holds in memory


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise InvalidArgument("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def _decode(endpoint: Endpoint, request: Request) -> Any:
    if endpoint.schema is None:
        return None
    try:
        if endpoint.query:
            return msgspec.convert(dict(request.query_params), endpoint.schema, strict=False)
        return msgspec.json.decode(await _arguments(request) or b"{}", type=endpoint.schema)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise InvalidArgument(f"{request.url.path}: {_plain(e)}") from None
    except RecursionError:
        raise InvalidArgument(f"{request.url.path}: the arguments are nested too deeply") from None


async def _arguments(request: Request) -> bytes:
    """The body, refused as soon as it is known to be past MAX_ARGUMENTS."""
    too_large = TooLarge(f"{request.url.path}: the arguments are over {MAX_ARGUMENTS >> 20} MiB")
    try:
        if int(request.headers.get("content-length") or 0) > MAX_ARGUMENTS:
            raise too_large
    except ValueError:
        raise InvalidArgument("the Content-Length header is not a number") from None
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_ARGUMENTS:
            raise too_large
        parts.append(part)
    return b"".join(parts)


def _plain(e: Exception) -> str:
    text = str(e)
    # msgspec's word for a string with a lone UTF-16 surrogate in it
    return "the JSON is malformed or not valid UTF-8" if text == "Input data was truncated" else text


def disconnected(e: BaseException) -> bool:
    """Whether `e` is (only) the client going away, also when a nursery wrapped it."""
    if isinstance(e, BaseExceptionGroup):
        return all(disconnected(x) for x in e.exceptions)
    return isinstance(e, ClientDisconnect)


def _wrap(endpoint: Endpoint, gate: Gate):
    async def route(request: Request) -> Response:
        try:
            try:
                caller, bad_token = gate.identify(_bearer(request)), None
            except Unauthenticated as e:  # matters only where a token is needed
                caller, bad_token = Caller("", admin=False), e
            args = await _decode(endpoint, request)
            need = endpoint.access(args)
            if inspect.isawaitable(need):
                need = await need
            if bad_token is not None and need.signed_in:
                raise bad_token
            gate.check(caller, need)
            return await endpoint.handler(Call(request, args, caller, gate))
        except BaseException as e:  # noqa: BLE001 - translated at the boundary
            while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
                e = e.exceptions[0]  # raised in a nursery
            if isinstance(e, DataLoss) and endpoint.by_hash:
                e = NotFound(str(e))
            if disconnected(e):
                log.info("%s %s: the client went away before the end of its request", request.method, request.url.path)
                return Response(status_code=400)  # no one reads it
            if not isinstance(e, Exception):
                raise  # cancellation, KeyboardInterrupt
            return error(e)

    return route


async def _unknown(request: Request) -> Response:
    return error(NotFound(f"no API route {request.method} {request.url.path}"))


def routes(endpoints: Iterable[Endpoint], gate: Gate) -> list[Route]:
    """Starlette routes for the endpoints, each behind the front door, then a JSON 404 for any
    other path."""
    out = [Route(e.path, _wrap(e, gate), methods=[e.method]) for e in endpoints]
    out.append(Route("/{path:path}", _unknown, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))
    return out
