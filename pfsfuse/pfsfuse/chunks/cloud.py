"""What the cloud backends (S3, GCS, Azure Blob) share: the bucket and key prefix of their URL,
paged listing, timeouts, and which failures are temporary."""

from __future__ import annotations

import http.client
from abc import abstractmethod
from collections.abc import Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

import urllib3.exceptions

from .objects import ObjectStore, check_key

# Statuses worth another try: request timeout, throttling, server errors.
TEMP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# A reset, refused or timed-out connection, or a body cut short (the SDKs wrap these in their own).
_NETWORK = (
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.NewConnectionError,
)


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


class CloudStore(ObjectStore):
    """Objects under a key prefix in a bucket (an Azure container) of a cloud object store, at
    `scheme://bucket/prefix`.

    Puts are durable when they return, so `sync` has nothing to do. The SDKs' own retries are off:
    @retrying is the one retry policy, and is_temp_failure classifies each backend's errors.
    """

    scheme: str
    options: frozenset[str] = frozenset()  # the query parameters the URL may carry
    connect_timeout = 10.0  # seconds
    read_timeout = 60.0  # seconds without progress on a response: a hung request is retried
    page_size = 1000  # keys per listing request
    temp_errors: tuple[type[BaseException], ...] = _NETWORK  # always temporary; plus each SDK's

    @classmethod
    def from_url(cls, url: str) -> CloudStore:
        return cls(url)

    def __init__(self, url: str):
        super().__init__()
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        unknown = query.keys() - self.options
        if parts.scheme != self.scheme or not parts.netloc or parts.fragment or unknown:
            allowed = "".join(f", ?{o}=" for o in sorted(self.options))
            raise ValueError(f"unsupported storage URL {url!r}: expected {self.scheme}://bucket/prefix{allowed}")
        self.bucket = parts.netloc
        prefix = unquote(parts.path).strip("/")
        if prefix:
            try:
                check_key(prefix)
            except ValueError as exc:
                raise ValueError(f"unsupported storage URL {url!r}: {exc}") from None
        self.prefix = prefix + "/" if prefix else ""
        self.query = query
        self.url = url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _name(self, key: str) -> str:
        return self.prefix + key

    def _list(self, prefix: str) -> Iterator[str]:
        token = None
        while True:
            names, token = self._list_page(self.prefix + prefix, token)
            for name in names:
                yield name[len(self.prefix) :]
            if not token:
                return

    @abstractmethod
    def _list_page(self, prefix: str, token: str | None) -> tuple[list[str], str | None]:
        """One page of the object names starting with `prefix` (in the bucket, prefix included),
        and the token of the next page (None after the last). Decorated with @retrying."""

    def is_temp_failure(self, exc: BaseException) -> bool:
        return any(isinstance(e, self.temp_errors) or self.is_temp_error(e) for e in causes(exc))

    def is_temp_error(self, exc: BaseException) -> bool:
        """Whether an error the SDK raised for a response is temporary (throttling, 5xx...)."""
        return False
