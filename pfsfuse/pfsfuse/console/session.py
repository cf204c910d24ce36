"""Who is signed in: a cookie naming a session that holds the user's daemon token and a CSRF
token for the forms that change things. Sessions live in memory: a restart signs everyone out."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from pfsfuse.api.auth import RemoteAuth
from pfsfuse.metadata.errors import PfsError, Unauthenticated

COOKIE = "pfs_console"
_IDLE = 12 * 3600.0  # a session unused this long is forgotten


@dataclass
class Session:
    token: str | None  # None when the daemon has no auth: everyone may do everything
    subject: str
    admin: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    used: float = field(default_factory=time.monotonic)

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given, self.csrf)


class Sessions:
    def __init__(self, address: str):
        self.address = address
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def auth_active(self) -> bool:
        """Whether the daemon asks for tokens: who_am_i without one is refused only then."""
        auth = RemoteAuth(self.address)
        try:
            auth.who_am_i()
        except Unauthenticated:
            return True
        except PfsError:
            return False  # auth is not activated
        finally:
            auth.close()
        return True

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None or now - s.used > _IDLE:
                self._by_id.pop(sid, None)
                return None
            s.used = now
            return s

    def open_anonymous(self) -> tuple[str, Session]:
        return self._add(Session(None, "", True))

    def sign_in(self, code: str) -> tuple[str, Session]:
        """A token or a one-time password (from `pfs auth get-otp`) exchanged for a session."""
        auth = RemoteAuth(self.address)
        try:
            info = auth.authenticate(code.strip())
        finally:
            auth.close()
        me = RemoteAuth(self.address, info.token)
        try:
            who = me.who_am_i()
        finally:
            me.close()
        return self._add(Session(info.token, who.subject, who.admin))

    def sign_out(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def _add(self, s: Session) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for old in [k for k, v in self._by_id.items() if now - v.used > _IDLE]:
                del self._by_id[old]  # forgotten here, so that idle sessions do not pile up
            self._by_id[sid] = s
        return sid, s
