"""AWS Signature Version 4, checked on every request.

Who holds which secret is the `Authenticator`'s business: with auth not activated the gateway
uses `AcceptAny` (any credentials, or none, as Pachyderm's gateway did); `StaticCredentials`
holds fixed key pairs; `TokenCredentials` takes a pfs auth token as both the access key and the
secret key, as Pachyderm's gateway did, once the daemon's auth is active.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, quote

from pfsfuse.metadata.errors import Unauthenticated
from pfsfuse.s3gateway.errors import S3Error

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<scope>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})"
)
_SKEW = datetime.timedelta(minutes=15)
UNSIGNED = {"UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
SIGNED_CHUNKS = {"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"}
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Signed:
    """What a verified request's signature covers of its body: `payload` is the body's SHA-256
    (hex), or how its aws-chunked pieces are signed, each chaining from the one before it, the
    first from the request's own `signature`."""

    payload: str
    amz_date: str
    scope: str
    key: bytes  # the signing key derived from the secret
    signature: str

    @property
    def sha256(self) -> str | None:
        """The body's signed SHA-256, None when the body is unsigned or signed piece by piece."""
        return None if self.payload in UNSIGNED or self.payload.startswith("STREAMING-") else self.payload

    @property
    def chunks_signed(self) -> bool:
        return self.payload in SIGNED_CHUNKS

    def _sign(self, *lines: str) -> str:
        return hmac.new(self.key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()

    def chunk(self, previous: str, data_sha256: str) -> str:
        """The signature of an aws-chunked piece whose data hashes to `data_sha256`."""
        head = ("AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, previous, _EMPTY_SHA256)
        return self._sign(*head, data_sha256)

    def trailer(self, previous: str, trailers: bytes) -> str:
        """The signature of the trailing headers (`name:value\n` each) after the last piece."""
        return self._sign(
            "AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope, previous, hashlib.sha256(trailers).hexdigest()
        )


class Authenticator(Protocol):
    @property
    def active(self) -> bool:
        """False: every request is let through, signed or not, checked or not."""

    def secret_for(self, access_key: str) -> str | None:
        """The secret key of `access_key`, None if there is no such key."""


class AcceptAny:
    active = False

    def secret_for(self, access_key: str) -> str | None:
        return None


class StaticCredentials:
    active = True

    def __init__(self, pairs: dict[str, str]):
        self._pairs = dict(pairs)

    def secret_for(self, access_key: str) -> str | None:
        return self._pairs.get(access_key)


class TokenCredentials:
    """The daemon's auth tokens as S3 credentials: access key = secret key = the token. A token
    that is expired, revoked or unknown is refused before the signature is looked at."""

    def __init__(self, is_active: Callable[[], bool], identify: Callable[[str], object]):
        self._is_active, self._identify = is_active, identify

    @property
    def active(self) -> bool:  # auth may be activated or deactivated while the gateway runs
        return self._is_active()

    def secret_for(self, access_key: str) -> str | None:
        try:
            self._identify(access_key)
        except Unauthenticated:
            raise S3Error(
                403, "ExpiredToken", "the access key is not a valid pfs token (expired or revoked): log in again"
            ) from None
        return access_key


def access_key(query: str, headers) -> str | None:
    """The access key a request is signed with (checked by `check`), None if unsigned."""
    q = dict(parse_qsl(query, keep_blank_values=True))
    if "X-Amz-Credential" in q:
        return q["X-Amz-Credential"].partition("/")[0]
    m = _AUTH.fullmatch(headers.get("authorization", "").strip())
    return m["key"] if m else None


def check(auth: Authenticator, method: str, raw_path: str, query: str, headers, now=None) -> Signed | None:
    """Verify the request's signature (header or presigned URL); returns what it says of the
    body (for the body's checks), None when auth is not active."""
    if not auth.active:
        return None
    q = dict(parse_qsl(query, keep_blank_values=True))
    if "X-Amz-Signature" in q:  # a presigned URL
        key, _, scope = q.get("X-Amz-Credential", "").partition("/")
        signed, signature, amz_date = q.get("X-Amz-SignedHeaders", ""), q["X-Amz-Signature"], q.get("X-Amz-Date", "")
        payload = "UNSIGNED-PAYLOAD"
        query = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
        try:
            expires = datetime.timedelta(seconds=int(q.get("X-Amz-Expires", "0")))
        except ValueError:
            raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Expires is not a number") from None
    else:
        m = _AUTH.fullmatch(headers.get("authorization", "").strip())
        if m is None:
            raise S3Error(403, "AccessDenied", "this gateway requires AWS Signature Version 4")
        key, scope, signed, signature = m["key"], m["scope"], m["signed"], m["sig"]
        amz_date = headers.get("x-amz-date", "")
        payload = headers.get("x-amz-content-sha256", "")
        if not payload:
            raise S3Error(400, "InvalidRequest", "missing x-amz-content-sha256")
        expires = None
    secret = auth.secret_for(key)
    if secret is None:
        raise S3Error(403, "InvalidAccessKeyId", f"unknown access key {key!r}")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise S3Error(403, "AccessDenied", "missing or malformed X-Amz-Date") from None
    now = now or datetime.datetime.now(datetime.UTC)
    if expires is not None:
        if now > when + expires:
            raise S3Error(403, "AccessDenied", "the presigned URL has expired")
    elif abs(now - when) > _SKEW:
        raise S3Error(403, "RequestTimeTooSkewed", "the request time is too far from the server's")
    canonical = "\n".join(
        [
            method,
            raw_path,
            _canonical_query(query),
            "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed.split(";")),
            signed,
            payload,
        ]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    date, region, service, _ = (scope.split("/") + ["", "", "", ""])[:4]
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise S3Error(403, "SignatureDoesNotMatch", "the request signature does not match")
    if payload.startswith("STREAMING-") and payload not in UNSIGNED | SIGNED_CHUNKS:
        raise S3Error(400, "InvalidArgument", f"x-amz-content-sha256 {payload} is not supported")
    return Signed(payload, amz_date, scope, k, signature)


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))
