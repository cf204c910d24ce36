"""The auth API (Pachyderm 1.7's `pachctl auth`): its interface, its client over the daemon's
socket, and the daemon's routes.

As for the storage and pipeline APIs, the interface's annotations are the routes' schemas. The
daemon's `pfsfuse.auth.Auth` serves the calls; every one goes through the front door.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from pfsfuse.api import wire
from pfsfuse.api.transport import Token, Transport
from pfsfuse.api.types import Seconds

# A user (`alice`), a robot (`robot:ci`) or a pipeline's own identity (`pipeline:edges`).
Subject = Annotated[str, Meta(pattern=r"^(robot:|pipeline:)?[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Scope = Annotated[str, Meta(pattern="^(none|reader|writer|owner)$")]


class TokenInfo(Struct):
    subject: str
    token: str
    expires: float  # seconds since the epoch


class WhoAmI(Struct):
    subject: str
    admin: bool
    expires: float


class AclEntry(Struct):
    subject: str
    scope: str


class AuthAPI(ABC):
    @abstractmethod
    def activate(self, admins: list[Subject], ttl: Seconds | None = None) -> TokenInfo:
        """Turn auth on with these admins; a token of the first one."""

    @abstractmethod
    def deactivate(self) -> None:
        """Turn auth off: every ACL, token and admin is forgotten."""

    @abstractmethod
    def authenticate(self, code: str) -> TokenInfo:
        """A one-time password exchanged for a token, or a token checked and described."""

    @abstractmethod
    def who_am_i(self) -> WhoAmI: ...

    @abstractmethod
    def revoke_token(self, token: str | None = None) -> None:
        """Revoke a token (the caller's own when None); only admins revoke others'."""

    @abstractmethod
    def get_scope(self, repo: str, subject: Subject | None = None) -> str: ...

    @abstractmethod
    def get_acl(self, repo: str) -> list[AclEntry]: ...

    @abstractmethod
    def set_scope(self, repo: str, subject: Subject, scope: Scope) -> None: ...

    @abstractmethod
    def list_admins(self) -> list[str]: ...

    @abstractmethod
    def modify_admins(self, add: list[Subject] | None = None, remove: list[Subject] | None = None) -> list[str]: ...

    @abstractmethod
    def get_auth_token(self, subject: Subject, ttl: Seconds | None = None) -> TokenInfo:
        """A new token for `subject` (admins: anyone's; others: their own)."""

    @abstractmethod
    def get_otp(self, subject: Subject, ttl: Seconds | None = None) -> TokenInfo:
        """A one-time password for `subject`, to give to `pfs auth login`."""


METHODS = frozenset(AuthAPI.__abstractmethods__)


class RemoteAuth(AuthAPI):
    def __init__(self, address: str, token: Token = None):
        self._http = Transport(address, token=token)

    def close(self) -> None:
        self._http.close()

    def _rpc(self, method: str, **args):
        data = self._http.call("POST", f"/auth/{method}", wire.encode_args(method, args, AuthAPI))
        return msgspec.json.decode(data, type=wire.hints(method, AuthAPI)["return"])

    def activate(self, admins, ttl=None):
        return self._rpc("activate", admins=admins, ttl=ttl)

    def deactivate(self):
        return self._rpc("deactivate")

    def authenticate(self, code):
        return self._rpc("authenticate", code=code)

    def who_am_i(self):
        return self._rpc("who_am_i")

    def revoke_token(self, token=None):
        return self._rpc("revoke_token", token=token)

    def get_scope(self, repo, subject=None):
        return self._rpc("get_scope", repo=repo, subject=subject)

    def get_acl(self, repo):
        return self._rpc("get_acl", repo=repo)

    def set_scope(self, repo, subject, scope):
        return self._rpc("set_scope", repo=repo, subject=subject, scope=scope)

    def list_admins(self):
        return self._rpc("list_admins")

    def modify_admins(self, add=None, remove=None):
        return self._rpc("modify_admins", add=add, remove=remove)

    def get_auth_token(self, subject, ttl=None):
        return self._rpc("get_auth_token", subject=subject, ttl=ttl)

    def get_otp(self, subject, ttl=None):
        return self._rpc("get_otp", subject=subject, ttl=ttl)


def endpoints(auth) -> list:
    """The daemon's auth routes, served by `auth` (a `pfsfuse.auth.Auth`), which also checks what
    depends on the caller beyond the front door (whose token may be given, whose scope read)."""
    import functools

    import trio

    from pfsfuse.api import door  # the daemon's: clients start faster without

    access = {
        "activate": lambda a: door.PUBLIC,
        "deactivate": lambda a: door.ADMIN,
        "authenticate": lambda a: door.PUBLIC,
        "who_am_i": lambda a: door.SIGNED_IN,
        "revoke_token": lambda a: door.SIGNED_IN,
        "get_scope": lambda a: door.SIGNED_IN,
        "get_acl": lambda a: door.reads(a.repo),
        "set_scope": lambda a: door.owns(a.repo),
        "list_admins": lambda a: door.SIGNED_IN,
        "modify_admins": lambda a: door.ADMIN,
        "get_auth_token": lambda a: door.SIGNED_IN,
        "get_otp": lambda a: door.SIGNED_IN,
    }

    def handler(method: str):
        async def call(c: door.Call):
            fn = functools.partial(getattr(auth, method), c.caller, **wire.as_kwargs(c.args))
            return door.json(await trio.to_thread.run_sync(fn))  # it may write to the index

        return call

    return [door.Endpoint(f"/auth/{m}", handler(m), access[m], wire.schema(m, AuthAPI)) for m in sorted(METHODS)]
