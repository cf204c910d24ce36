"""Which URLs the daemon may reach on a caller's behalf: put-file's URLs and pipelines' egress.

The operator sets it in `$PFS_HOME/policy.toml` (docs/security.md):

    [urls]
    schemes = ["https", "s3", "gs", "gcs", "as", "wasb"]   # what put-file and egress may name
    loopback = false      # 127.0.0.0/8, ::1
    link_local = false    # 169.254.0.0/16 (the cloud metadata address), fe80::/10
    private = false       # 10/8, 172.16/12, 192.168/16, fc00::/7, and other non-global addresses
    file_dirs = []        # file:// egress only under these directories

Without the file, a daemon that listens on TCP gets exactly that (secure) policy; a daemon on its
unix socket only, whose callers all run as its own user, may reach anything. A host is checked by
the addresses it resolves to, at the moment of connecting (so DNS cannot be rebound between the
check and the connection), and every redirect is checked again.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pfsfuse.metadata.errors import InvalidArgument, PermissionDenied

ALL_SCHEMES = ("http", "https", "s3", "gs", "gcs", "as", "wasb", "az", "file")
SECURE_SCHEMES = ("http", "https", "s3", "gs", "gcs", "as", "wasb", "az")
FILE = "policy.toml"


@dataclass(frozen=True)
class Policy:
    schemes: tuple[str, ...] = ALL_SCHEMES
    loopback: bool = True
    link_local: bool = True
    private: bool = True
    file_dirs: tuple[str, ...] | None = None  # None: anywhere
    source: str = "the default for a unix socket"  # named in refusals, so the operator knows where to look

    def check_url(self, url: str, what: str = "URL") -> None:
        """Refuse a URL whose scheme is not allowed, a file:// outside the named directories, or
        an explicit endpoint (s3's ?endpoint=) or http(s) host on a forbidden address."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            self._refuse(f"{what} {url!r}: the scheme {scheme or '(none)'}:// is not allowed")
        if scheme == "file":
            self._check_dir(url, parts.netloc + parts.path, what)
        elif scheme in ("http", "https"):
            self.check_host(parts.hostname or "", url, what)
        for endpoint in parse_qs(parts.query).get("endpoint", []):
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https"):
                raise InvalidArgument(f"{what} {url!r}: the endpoint must be an http(s) URL")
            self.check_host(ep.hostname or "", url, what)

    def check_host(self, host: str, url: str, what: str = "URL") -> list[str]:
        """The host's addresses, all allowed; refuses if any is not (a name that resolves to a
        public and a private address is refused)."""
        if not host:
            raise InvalidArgument(f"{what} {url!r} names no host")
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise InvalidArgument(f"{what} {url!r}: cannot resolve {host}: {e}") from None
        found = []
        for info in infos:
            addr = str(info[4][0]).split("%", 1)[0]
            self.check_address(addr, url, what)
            found.append(addr)
        return found

    def check_address(self, addr: str, url: str, what: str = "URL") -> None:
        ip = ipaddress.ip_address(addr)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_unspecified:
            kind, allowed = "loopback", self.loopback
        elif ip.is_link_local:
            kind, allowed = "link-local", self.link_local
        elif not ip.is_global or ip.is_multicast:
            kind, allowed = "private", self.private
        else:
            return
        if not allowed:
            self._refuse(f"{what} {url!r}: {addr} is a {kind} address")

    def _check_dir(self, url: str, path: str, what: str) -> None:
        if self.file_dirs is None:
            return
        real = os.path.realpath(path or "/")
        for d in self.file_dirs:
            if real == d or real.startswith(d.rstrip("/") + "/"):
                return
        where = ", ".join(self.file_dirs) or "no directory"
        self._refuse(f"{what} {url!r}: file:// may write only under {where}")

    def _refuse(self, why: str) -> None:
        raise PermissionDenied(f"{why} (URL policy: {self.source})")


OPEN = Policy()


def secure(source: str = "the default for a daemon on TCP") -> Policy:
    return Policy(SECURE_SCHEMES, False, False, False, (), source)


def load(home: Path, listening: bool) -> Policy:
    """The operator's policy from `home/policy.toml`, the unset keys from the default for how
    the daemon is reached."""
    base = secure() if listening else OPEN
    path = home / FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return base
    try:
        doc: dict[str, Any] = tomllib.loads(raw.decode()).get("urls", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path}: {e}") from None
    unknown = set(doc) - {"schemes", "loopback", "link_local", "private", "file_dirs"}
    if unknown:
        raise InvalidArgument(f"{path}: unknown keys in [urls]: {', '.join(sorted(unknown))}")
    schemes = tuple(s.lower() for s in _strings(doc, "schemes", path, list(base.schemes)))
    bad = set(schemes) - set(ALL_SCHEMES)
    if bad:
        raise InvalidArgument(f"{path}: unknown schemes {', '.join(sorted(bad))}; known: {', '.join(ALL_SCHEMES)}")
    dirs = doc.get("file_dirs")
    file_dirs = base.file_dirs
    if dirs is not None:
        file_dirs = tuple(os.path.realpath(d) for d in _strings(doc, "file_dirs", path, []))
        if any(not os.path.isabs(d) for d in _strings(doc, "file_dirs", path, [])):
            raise InvalidArgument(f"{path}: file_dirs must be absolute paths")
    flags = {k: _flag(doc, k, path, getattr(base, k)) for k in ("loopback", "link_local", "private")}
    return Policy(schemes, file_dirs=file_dirs, source=str(path), **flags)


def _strings(doc: dict[str, Any], key: str, path: Path, default: list[str]) -> list[str]:
    value = doc.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{path}: {key} must be a list of strings")
    return value


def _flag(doc: dict[str, Any], key: str, path: Path, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{path}: {key} must be true or false")
    return value


# The daemon installs its policy once at start; a process that is not a daemon (a test, a tool)
# serves no one else, so it may reach anything.
_current: list[Policy] = [OPEN]


def install(policy: Policy) -> None:
    _current[0] = policy


def current() -> Policy:
    return _current[0]
