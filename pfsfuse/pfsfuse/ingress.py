"""Where put-file's URLs are read, by the daemon: http(s), and objects of S3, Google Cloud Storage
and Azure Blob Storage, as pachctl 1.7 takes them.

    s3://BUCKET/KEY[?endpoint=URL&region=NAME]
    gs://BUCKET/KEY (also gcs://)
    as://ACCOUNT_HOST/CONTAINER/KEY, wasb://ACCOUNT_HOST/CONTAINER/KEY (1.7's form)
    wasb://CONTAINER@ACCOUNT_HOST/KEY (Hadoop's form)

The clients are those of our storage backends (pfsfuse.chunks), built from the daemon's
environment: the same credentials and endpoints (AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST,
AZURE_STORAGE_CONNECTION_STRING...). Objects are streamed, never held whole; a read cut by a
temporary failure resumes where it stopped, from the same version of the object.
"""

from __future__ import annotations

import contextlib
import functools
import io
import posixpath
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, unquote, urljoin, urlsplit

import msgspec

from pfsfuse import urlpolicy
from pfsfuse.api.types import Put, WriteOp
from pfsfuse.chunks import StorageError, open_store
from pfsfuse.metadata.errors import InvalidArgument, NotFound, PermissionDenied, PfsError, Unavailable

if TYPE_CHECKING:
    import httpcore

    from pfsfuse.chunks import CloudStore

HTTP_SCHEMES = ("http", "https")
OBJECT_SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs", "as": "az", "wasb": "az"}
PIECE = 8 << 20  # bytes asked for at once where a backend reads by ranges
HTTP_TIMEOUT = 30.0  # seconds


def is_url(source: str) -> bool:
    """Whether put-file's `source` is a URL the daemon reads (not a local path)."""
    return urlsplit(source).scheme in (*HTTP_SCHEMES, *OBJECT_SCHEMES)


def is_object_url(source: str) -> bool:
    return urlsplit(source).scheme in OBJECT_SCHEMES


def default_path(url: str) -> str:
    """Where a URL's data lands when put-file is given no PATH: the object's key, or the URL's
    path."""
    if is_object_url(url):
        return parse(url).key
    return urlsplit(url).path


@dataclass(frozen=True)
class ObjectURL:
    url: str  # as given
    scheme: str  # our backend's: s3, gs or az
    bucket: str  # an Azure container
    key: str  # '' for the whole bucket
    base: str  # the URL up to the key, in the form given
    query: str  # the backend's options (s3: endpoint, region)
    account: str = ""  # Azure: the storage account the URL names, if any

    def child(self, key: str) -> str:
        """The URL, in the same form, of another object of the bucket."""
        return f"{self.base}{quote(key, safe='/')}{'?' + self.query if self.query else ''}"


def parse(url: str) -> ObjectURL:
    """An object-store URL; raises InvalidArgument saying what is wrong with it."""
    parts = urlsplit(url)
    scheme = OBJECT_SCHEMES.get(parts.scheme)
    if scheme is None:
        raise InvalidArgument(f"unsupported URL {url!r}: use {_forms()}")
    if parts.fragment:
        raise InvalidArgument(f"invalid URL {url!r}: it has a '#' fragment (write '#' as %23)")
    if parts.query and scheme != "s3":
        raise InvalidArgument(f"invalid URL {url!r}: only s3:// takes options (?endpoint=, ?region=)")
    path = parts.path.lstrip("/")
    if scheme != "az":
        bucket, account, base = parts.netloc, "", f"{parts.scheme}://{parts.netloc}/"
    elif "@" in parts.netloc:  # wasb://CONTAINER@ACCOUNT.blob.core.windows.net/KEY
        bucket, host = parts.netloc.split("@", 1)
        account, base = host.split(".", 1)[0], f"{parts.scheme}://{parts.netloc}/"
    else:  # as://ACCOUNT.blob.core.windows.net/CONTAINER/KEY, as 1.7 parses it
        bucket, _, path = path.partition("/")
        account = parts.netloc.split(".", 1)[0]
        base = f"{parts.scheme}://{parts.netloc}/{bucket}/"
    if not bucket:
        what = "container" if scheme == "az" else "bucket"
        raise InvalidArgument(f"invalid URL {url!r}: it names no {what}; use {_forms()}")
    return ObjectURL(url, scheme, unquote(bucket), unquote(path), base, parts.query, account)


def _forms() -> str:
    return (
        "http(s)://..., s3://BUCKET/KEY, gs://BUCKET/KEY, as://ACCOUNT/CONTAINER/KEY, "
        "wasb://CONTAINER@ACCOUNT/KEY or pfs://REPO/COMMIT/PATH"
    )


def expand(ops: Iterable[WriteOp]) -> Iterator[WriteOp]:
    """The ops with each recursive object-store Put replaced by one Put per object under its
    prefix, at the object's path relative to the prefix. A prefix with no object under it is
    read as one object, so that -r of a single object puts it, as -r of a local file does."""
    for op in ops:
        if not (isinstance(op, Put) and op.recursive):
            yield op
            continue
        if op.url is None or not is_object_url(op.url):
            raise InvalidArgument(f"{op.path}: only an object-store URL is put recursively")
        urlpolicy.current().check_url(op.url, "put-file")
        src = parse(op.url)
        found = False
        for key in _list(src):
            found = True
            rel = key[len(src.key) :].lstrip("/") if src.key else key
            yield msgspec.structs.replace(op, path=posixpath.join(op.path, rel), url=src.child(key), recursive=False)
        if not found:
            yield msgspec.structs.replace(op, recursive=False)


def _list(src: ObjectURL) -> Iterator[str]:
    """The keys under the URL's key as a directory, sorted; directory markers (keys ending in
    '/') are skipped."""
    store = _store(src)
    prefix = src.key.rstrip("/") + "/" if src.key else ""
    with _translated(src.url, "list", store):
        keys = sorted(store.list(prefix))
    return (k for k in keys if not k.endswith("/"))


@contextlib.contextmanager
def open_url(url: str) -> Iterator[BinaryIO]:
    """A readable stream of the data at `url`, closed on leaving; the daemon's URL policy
    decides whether it may be read."""
    urlpolicy.current().check_url(url, "put-file")
    if urlsplit(url).scheme in HTTP_SCHEMES:
        with _http(url) as stream:
            yield stream
        return
    src = parse(url)
    if not src.key or src.key.endswith("/"):
        raise InvalidArgument(f"{url} names no object: give its key, or use -r for every object under it")
    store = _store(src)
    open_at = {"s3": _s3_pieces, "gs": _gcs_pieces, "az": _azure_pieces}[src.scheme](store, src)
    with reader(_resuming(open_at, store, src.url)) as stream:
        yield stream


# -- the backends' clients ------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _store_at(scheme: str, bucket: str, query: str) -> CloudStore:
    return open_store(f"{scheme}://{quote(bucket, safe='')}{'?' + query if query else ''}")


def _store(src: ObjectURL) -> CloudStore:
    """The backend at the URL's bucket, made once and kept: a client takes long to make."""
    try:
        store = _store_at(src.scheme, src.bucket, src.query)
    except ValueError as e:
        raise InvalidArgument(f"invalid URL {src.url!r}: {e}") from None
    except StorageError as e:
        raise Unavailable(f"cannot read {src.url}: {e}") from None
    account = getattr(store, "container", None) and store.container.account_name
    if src.account and account and src.account != account:
        raise InvalidArgument(
            f"{src.url} names the storage account {src.account!r}, but the daemon's Azure "
            f"credentials are for {account!r}"
        )
    return store


@contextlib.contextmanager
def _translated(url: str, doing: str, store: CloudStore) -> Iterator[None]:
    try:
        yield
    except PfsError:
        raise
    except Exception as e:  # noqa: BLE001 - the SDKs' own, translated here
        raise _failure(url, doing, store, e) from None


def _failure(url: str, doing: str, store: CloudStore, exc: Exception) -> PfsError:
    """A backend's failure as one line naming the URL: NotFound for a missing bucket or object,
    Unavailable for the rest (access denied, no network...)."""
    if isinstance(exc, ValueError):  # a key or prefix our backends refuse
        return InvalidArgument(f"cannot {doing} {url}: {exc}")
    cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
    why = store.describe(cause) if isinstance(cause, store.sdk_errors) else str(exc)
    why = why.strip().splitlines()[0] if why.strip() else type(exc).__name__
    kind = NotFound if _status(cause) == 404 else Unavailable
    return kind(f"cannot {doing} {url}: {why}")


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an SDK's error, where it has one."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return getattr(exc, "code", None) or getattr(exc, "status_code", None)


# Each opener returns open_at(offset): the object's bytes from `offset`, in pieces, always of the
# version the first call saw (a later version fails the read rather than mixing in).


def _s3_pieces(store, src: ObjectURL) -> Callable[[int], Iterator[bytes]]:
    etag = None

    def open_at(offset: int) -> Iterator[bytes]:
        nonlocal etag
        args = {"Bucket": src.bucket, "Key": src.key}
        if etag:
            args["IfMatch"] = etag
        if offset:
            args["Range"] = f"bytes={offset}-"
        try:
            response = store.client.get_object(**args)
        except Exception as e:  # noqa: BLE001
            if offset and getattr(e, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return  # it stopped right at the end
            raise
        etag = etag or response.get("ETag")
        body = response["Body"]
        try:
            yield from body.iter_chunks(1 << 20)
        finally:
            body.close()

    return open_at


def _gcs_pieces(store, src: ObjectURL) -> Callable[[int], Iterator[bytes]]:
    blob = None
    timeout = (store.connect_timeout, store.read_timeout)

    def open_at(offset: int) -> Iterator[bytes]:
        nonlocal blob
        if blob is None:
            # Its generation then pins every range to this version of the object.
            blob = store.client.bucket(src.bucket).get_blob(src.key, retry=None, timeout=timeout)
            if blob is None:
                raise NotFound(f"cannot read {src.url}: no such object or bucket")
        while offset < blob.size:
            end = min(offset + PIECE, blob.size) - 1
            data = blob.download_as_bytes(
                start=offset, end=end, raw_download=True, checksum=None, retry=None, timeout=timeout
            )
            if not data:
                raise Unavailable(f"cannot read {src.url}: it ended after {offset} of {blob.size} bytes")
            offset += len(data)
            yield data

    return open_at


def _azure_pieces(store, src: ObjectURL) -> Callable[[int], Iterator[bytes]]:
    etag = None

    def open_at(offset: int) -> Iterator[bytes]:
        nonlocal etag
        from azure.core import MatchConditions

        pinned: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            download = store.container.download_blob(src.key, offset=offset or None, max_concurrency=1, **pinned)
        except Exception as e:  # noqa: BLE001
            if offset and _status(e) == 416:
                return  # it stopped right at the end
            raise
        etag = etag or download.properties.etag
        yield from download.chunks()  # the SDK keeps the etag across its own range requests

    return open_at


def _resuming(open_at, store: CloudStore, url: str) -> Iterator[bytes]:
    """open_at(0)'s pieces; after a temporary failure, open_at(where it stopped). Failures in a
    row, with no byte read between them, have the backend's retry budget and backoff."""
    offset, attempt, deadline = 0, 0, 0.0
    while True:
        try:
            for piece in open_at(offset):
                offset += len(piece)
                attempt = 0
                yield piece
            return
        except PfsError:
            raise
        except Exception as e:  # noqa: BLE001 - the SDKs' own, translated here
            attempt += 1
            if attempt == 1:
                deadline = time.monotonic() + store.retry_timeout
            delay = random.uniform(0, store.retry_delay * 2 ** (attempt - 1))
            out_of_time = time.monotonic() + delay > deadline
            if not store.is_temp_failure(e) or attempt >= store.retry_attempts or out_of_time:
                raise _failure(url, "read", store, e) from None
        time.sleep(delay)


def reader(pieces: Iterable[bytes]) -> BinaryIO:
    """A buffered readable file over byte strings; closing it closes their generator."""
    return io.BufferedReader(_Pieces(iter(pieces)), 1 << 20)


class _Pieces(io.RawIOBase):
    def __init__(self, pieces: Iterator[bytes]):
        self._it = pieces
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            piece = next(self._it, None)
            if piece is None:
                return 0
            self._buf = memoryview(piece)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()  # ends the generator, which closes its response
        super().close()


# -- http(s) --------------------------------------------------------------------------------------


MAX_REDIRECTS = 10


@contextlib.contextmanager
def _http(url: str) -> Iterator[BinaryIO]:
    """GET `url`, following redirects by hand so that the policy checks each one, through a
    connection pool that connects only to the addresses the policy allows."""
    import httpcore

    policy = urlpolicy.current()
    try:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check_url(url, "put-file")
            if urlsplit(url).scheme not in HTTP_SCHEMES:
                raise InvalidArgument(f"put-file: a redirect to {url!r} leaves http(s)")
            timeouts = {"connect": HTTP_TIMEOUT, "read": HTTP_TIMEOUT, "write": HTTP_TIMEOUT, "pool": HTTP_TIMEOUT}
            with (
                httpcore.ConnectionPool(network_backend=_guarded(policy, url)) as pool,
                pool.stream("GET", url, extensions={"timeout": timeouts}) as r,
            ):
                if r.status in (301, 302, 303, 307, 308):
                    location = next((v for k, v in r.headers if k.lower() == b"location"), None)
                    if location is None:
                        raise Unavailable(f"cannot fetch {url}: HTTP {r.status} without a Location")
                    url = urljoin(url, location.decode("latin-1"))
                    continue
                if r.status != 200:
                    raise Unavailable(f"cannot fetch {url}: HTTP {r.status}")
                with reader(r.iter_stream()) as stream:
                    yield stream
                return
        raise Unavailable(f"cannot fetch {url}: more than {MAX_REDIRECTS} redirects")
    except httpcore.UnsupportedProtocol:
        raise InvalidArgument(f"cannot fetch {url}: unsupported URL") from None
    except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as e:
        raise Unavailable(f"cannot fetch {url}: {e or type(e).__name__}") from None


def _guarded(policy: urlpolicy.Policy, url: str) -> httpcore.NetworkBackend:
    """A network backend that connects only to addresses the policy allows, checked on the
    addresses it then connects to (a name cannot be rebound between the check and the connection)."""
    import httpcore

    class Guarded(httpcore.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            addrs = policy.check_host(host, url, "put-file")
            return super().connect_tcp(addrs[0], port, timeout, local_address, socket_options)

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            raise PermissionDenied(f"put-file {url!r}: unix sockets are not reachable")

    return Guarded()
