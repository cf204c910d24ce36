"""Authentication and per-repo access control, as Pachyderm 1.7's auth service.

Until `activate`, everyone who reaches the daemon may do everything (as before auth existed).
Once active, every request carries a bearer token; a token is a random secret whose SHA-256 is
all the index keeps, with its subject and expiry. Admins may do everything; anyone else has on
each repo the scope its ACL gives them (none, reader, writer or owner, each including the ones
before). A repo without an ACL (made before auth was activated) is the admins' alone.

All state is held in memory and written through to the index (`pfsfuse.metadata.auth`), so that
checking a request costs a hash and a few dictionary look-ups.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Mapping

from pfsfuse.api.auth import AclEntry, TokenInfo, WhoAmI
from pfsfuse.api.door import NONE, OWNER, READER, SCOPES, WRITER, Caller, Need
from pfsfuse.metadata.auth import Acl, AuthConfig, AuthRecords, TokenRecord
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

OPEN = Caller("", admin=True)  # auth not active
ANONYMOUS = Caller("", admin=False)
TOKEN_TTL = 30 * 24 * 3600.0  # a login's or a robot's token, unless asked otherwise
OTP_TTL = 300.0
PIPELINE = "pipeline:"
_RANK = {scope: n for n, scope in enumerate(SCOPES)}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Auth:
    def __init__(self, db: DB, clock=time.time):
        self._records = AuthRecords(db)
        self._clock = clock
        self._lock = threading.Lock()  # changes are read-modify-write of the maps below
        config, self._tokens, self._acls = self._records.load()
        self._admins: set[str] | None = None if config is None else set(config.admins)
        self._pipeline_tokens: dict[str, str] = {}  # this daemon's workers' tokens, by pipeline

    def reload(self) -> None:
        """Read the records again: a restore has replaced them."""
        with self._lock:
            config, self._tokens, self._acls = self._records.load()
            self._admins = None if config is None else set(config.admins)

    @property
    def active(self) -> bool:
        return self._admins is not None

    # -- the front door's questions ----------------------------------------------------------

    def identify(self, token: str | None) -> Caller:
        if self._admins is None:
            return OPEN
        if token is None:
            return ANONYMOUS
        h = _digest(token)
        rec = self._tokens.get(h)
        if rec is None or rec.one_time or rec.expires <= self._clock():
            raise Unauthenticated("the token is not valid (expired or revoked): log in again with 'pfs auth login'")
        return Caller(rec.subject, rec.subject in self._admins, h.hex())

    def check(self, caller: Caller, need: Need) -> None:
        if self._admins is None or caller.admin:
            return
        if not caller.subject:
            if need.signed_in:
                raise Unauthenticated("auth is active: log in with 'pfs auth login' or set PFS_AUTH_TOKEN")
            return
        if need.admin:
            raise PermissionDenied(f"{caller.subject} is not an admin")
        if need.subject is not None and caller.subject != need.subject:
            raise PermissionDenied(f"only {need.subject} may do this, not {caller.subject}")
        for repo, scope in need.repos:
            if _RANK[self._scope(caller.subject, repo)] < _RANK[scope]:
                raise PermissionDenied(f"{caller.subject} is not a {scope} of repo {repo}")

    def _scope(self, subject: str, repo: str) -> str:
        acl = self._acls.get(repo)
        return NONE if acl is None else acl.scopes.get(subject, NONE)

    # -- what follows from a call -------------------------------------------------------------

    def repo_made(self, caller: Caller, repo: str) -> None:
        """The creator of a repo owns it (a repo that has an ACL already keeps it)."""
        if self._admins is not None and caller.subject and repo not in self._acls:
            self._set_acls({repo: Acl({caller.subject: OWNER})})

    def repo_gone(self, repo: str) -> None:
        if repo in self._acls:
            self._set_acls({repo: None})

    def pipeline_made(self, caller: Caller, name: str, outputs: list[str], inputs: list[str], new: bool) -> None:
        """The pipeline's creator owns the repos it made (its outputs, its cron inputs); the
        pipeline itself, `pipeline:NAME`, reads its inputs and writes its outputs."""
        if self._admins is None:
            return
        subject = PIPELINE + name
        with self._lock:
            changes = self._without(subject)
            for repo in set(outputs) | set(inputs):
                acl = changes.get(repo) or self._acls.get(repo)
                scopes = dict(acl.scopes) if acl is not None else {}
                if new and acl is None and caller.subject:
                    scopes[caller.subject] = OWNER  # made by this call: a cron input, the outputs
                scopes[subject] = WRITER if repo in outputs else READER
                changes[repo] = Acl(scopes)
            self._write_acls(changes)

    def pipeline_gone(self, name: str) -> None:
        """A deleted pipeline's identity loses its scopes and its tokens."""
        if self._admins is None:
            return
        subject = PIPELINE + name
        with self._lock:
            self._write_acls(self._without(subject))
            self._pipeline_tokens.pop(name, None)
            gone = {h: None for h, rec in self._tokens.items() if rec.subject == subject}
            self._records.write(tokens=gone)
            for h in gone:
                del self._tokens[h]

    def pipeline_token(self, name: str) -> str | None:
        """The token a pipeline's workers run with (None while auth is not active); one per
        pipeline for this daemon's life, revoked when the pipeline is deleted."""
        if self._admins is None:
            return None
        with self._lock:
            token = self._pipeline_tokens.get(name)
            if token is None or _digest(token) not in self._tokens:
                token = self._pipeline_tokens[name] = self._mint(PIPELINE + name, TOKEN_TTL).token
            return token

    # -- the auth API (`pfsfuse.api.auth.AuthAPI`), each with its caller first -----------------

    def activate(self, caller: Caller, admins: list[str], ttl: float | None = None) -> TokenInfo:
        if not admins:
            raise InvalidArgument("activate needs at least one admin (--admins=USER[,USER...])")
        _no_pipelines(admins)
        with self._lock:
            if self._admins is not None:
                raise FailedPrecondition("auth is already active")
            self._records.write(config=AuthConfig(list(admins)))
            self._admins = set(admins)
            return self._mint(admins[0], ttl or TOKEN_TTL)

    def deactivate(self, caller: Caller) -> None:
        with self._lock:
            self._records.clear()
            self._admins, self._tokens, self._acls = None, {}, {}
            self._pipeline_tokens.clear()

    def authenticate(self, caller: Caller, code: str) -> TokenInfo:
        self._require_active()
        with self._lock:
            h = _digest(code)
            rec = self._tokens.get(h)
            if rec is None or rec.expires <= self._clock():
                raise Unauthenticated("the token or one-time password is not valid (expired, used or revoked)")
            if not rec.one_time:
                return TokenInfo(rec.subject, code, rec.expires)
            self._records.write(tokens={h: None})  # used up
            del self._tokens[h]
            return self._mint(rec.subject, TOKEN_TTL)

    def who_am_i(self, caller: Caller) -> WhoAmI:
        self._require_active()
        rec = self._tokens[_own(caller)]
        return WhoAmI(caller.subject, caller.admin, rec.expires)

    def revoke_token(self, caller: Caller, token: str | None = None) -> None:
        self._require_active()
        h = _own(caller) if token is None else _digest(token)
        rec = self._tokens.get(h)
        if rec is None:
            raise NotFound("no such token (expired or revoked already)")
        if rec.subject != caller.subject and not caller.admin:
            raise PermissionDenied(f"only an admin may revoke the tokens of {rec.subject}")
        with self._lock:
            self._records.write(tokens={h: None})
            self._tokens.pop(h, None)

    def get_scope(self, caller: Caller, repo: str, subject: str | None = None) -> str:
        admins = self._require_active()
        if subject is not None and subject != caller.subject:
            self.check(caller, Need(repos=((repo, READER),)))
        subject = subject or caller.subject
        if subject in admins:
            return OWNER  # admins may do everything
        return self._scope(subject, repo)

    def get_acl(self, caller: Caller, repo: str) -> list[AclEntry]:
        self._require_active()
        acl = self._acls.get(repo)
        return [AclEntry(s, scope) for s, scope in sorted((acl.scopes if acl else {}).items())]

    def set_scope(self, caller: Caller, repo: str, subject: str, scope: str) -> None:
        self._require_active()
        with self._lock:
            acl = self._acls.get(repo)
            scopes = dict(acl.scopes) if acl is not None else {}
            if scope == NONE:
                scopes.pop(subject, None)
            else:
                scopes[subject] = scope
            self._write_acls({repo: Acl(scopes)})

    def list_admins(self, caller: Caller) -> list[str]:
        return sorted(self._require_active())

    def modify_admins(self, caller: Caller, add: list[str] | None = None, remove: list[str] | None = None) -> list[str]:
        _no_pipelines(add or [])
        with self._lock:
            admins = (self._require_active() | set(add or [])) - set(remove or [])
            if not admins:
                raise FailedPrecondition("auth needs at least one admin: deactivate it instead")
            self._records.write(config=AuthConfig(sorted(admins)))
            self._admins = admins
            return sorted(admins)

    def get_auth_token(self, caller: Caller, subject: str, ttl: float | None = None) -> TokenInfo:
        self._may_speak_for(caller, subject)
        with self._lock:
            return self._mint(subject, ttl or TOKEN_TTL)

    def get_otp(self, caller: Caller, subject: str, ttl: float | None = None) -> TokenInfo:
        self._may_speak_for(caller, subject)
        with self._lock:
            return self._mint(subject, ttl or OTP_TTL, one_time=True)

    # -- inside -------------------------------------------------------------------------------

    def _require_active(self) -> set[str]:
        """The admins; an error while auth is not active."""
        if self._admins is None:
            raise FailedPrecondition("auth is not active (pfs auth activate --admins=USER)")
        return self._admins

    def _may_speak_for(self, caller: Caller, subject: str) -> None:
        self._require_active()
        _no_pipelines([subject])
        if subject != caller.subject and not caller.admin:
            raise PermissionDenied(f"only an admin may get a token for {subject}")

    def _mint(self, subject: str, ttl: float, one_time: bool = False) -> TokenInfo:
        """A new token (held under `_lock`); expired ones are dropped on the way."""
        now = self._clock()
        token = ("otp_" if one_time else "pfs_") + secrets.token_hex(16)
        rec = TokenRecord(subject, now + ttl, one_time)
        changes: dict[bytes, TokenRecord | None] = {h: None for h, r in self._tokens.items() if r.expires <= now}
        changes[_digest(token)] = rec
        self._records.write(tokens=changes)
        for h, r in changes.items():
            if r is None:
                del self._tokens[h]
            else:
                self._tokens[h] = r
        return TokenInfo(subject, token, rec.expires)

    def _without(self, subject: str) -> dict[str, Acl]:
        """The ACLs that mention `subject`, without it."""
        return {
            repo: Acl({s: v for s, v in acl.scopes.items() if s != subject})
            for repo, acl in self._acls.items()
            if subject in acl.scopes
        }

    def _set_acls(self, changes: Mapping[str, Acl | None]) -> None:
        with self._lock:
            self._write_acls(changes)

    def _write_acls(self, changes: Mapping[str, Acl | None]) -> None:
        self._records.write(acls=changes)
        for repo, acl in changes.items():
            if acl is None:
                self._acls.pop(repo, None)
            else:
                self._acls[repo] = acl


def _own(caller: Caller) -> bytes:
    """The hash of the token the caller signed in with (the front door let only those through)."""
    if caller.token is None:
        raise Unauthenticated("this needs a token: log in with 'pfs auth login'")
    return bytes.fromhex(caller.token)


def _no_pipelines(subjects: list[str]) -> None:
    for s in subjects:
        if s.startswith(PIPELINE):
            raise InvalidArgument(f"{s}: a pipeline's identity is its own; it cannot be given out")
