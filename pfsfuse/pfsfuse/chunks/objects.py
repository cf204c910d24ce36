"""The small object-store interface under the chunk store, and the retry policy of its backends."""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from time import monotonic, sleep

log = logging.getLogger(__name__)


class ObjectNotFound(Exception):
    """The object store holds no object under the key."""


class StorageError(Exception):
    """The object store failed for a reason that retrying did not cure (wrong bucket, missing
    credentials, access denied, or temporary failures beyond the retry budget). Its message is one
    line naming the store and the cause."""


def check_key(key: str) -> str:
    """Returns `key` if it is a valid object key, else raises ValueError.

    A key is '/'-separated names, none of them empty or starting with '.' (which also rules out '.',
    '..' and the temporary names backends may use), without NUL.
    """
    if not isinstance(key, str):
        raise TypeError(f"object key must be str, not {type(key).__name__}")
    if "\0" in key or any(not name or name.startswith(".") for name in key.split("/")):
        raise ValueError(
            f"invalid object key {key!r}: expected '/'-separated names, none empty or starting with '.', without NUL"
        )
    return key


def _check_prefix(prefix: str) -> str:
    # Every name but the last must be a valid key name; the last may be partial or empty.
    *names, _ = prefix.split("/")
    if "\0" in prefix or any(not name or name.startswith(".") for name in names):
        raise ValueError(
            f"invalid object key prefix {prefix!r}: expected '/'-separated names, none empty or "
            "starting with '.', without NUL"
        )
    return prefix


class ObjectStore(ABC):
    """A flat store of immutable-by-convention objects named by '/'-separated keys.

    Backends implement the underscore methods, which receive validated keys, decorate the ones that
    talk to the storage with @retrying, and classify their errors in is_temp_failure. Their methods
    block: callers run them in worker threads, at most max_in_flight at once per store.
    """

    url: str
    retry_attempts = 8  # calls in all, including the first
    retry_delay = 0.05  # seconds; backoff ceiling of the first retry, doubled for each next one
    retry_timeout = 60.0  # seconds; no retry is started that would end after this
    max_in_flight = 32  # calls running at once; remote backends size their connection pools to it
    # The SDK's exceptions: raised as StorageError with a one-line message, as temporary failures
    # are once retries run out.
    sdk_errors: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_in_flight)

    @classmethod
    def from_url(cls, url: str) -> ObjectStore:
        """The store at `url`, whose scheme names this backend (see backends.BACKENDS). Raises
        ValueError for a URL the backend does not take."""
        raise NotImplementedError(f"{cls.__name__} is not opened by URL")

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset + length) of the object (to its end if length is None), fewer if
        the object ends first. A negative offset counts from the end: get(key, -n) is the last n
        bytes (the whole object if it is shorter). Raises ObjectNotFound."""
        if length is not None and length < 0:
            raise ValueError(f"negative length {length}")
        if length == 0:  # no byte range is empty in HTTP: ask whether the object is there
            if not self.exists(key):
                raise ObjectNotFound(f"{self.url}: no object {key!r}")
            return b""
        return self._get(check_key(key), offset, length)

    def view(self, key: str, offset: int, length: int) -> bytes | memoryview:
        """get(key, offset, length) for a range inside the object, such as a chunk's location. A
        backend may answer with a read-only view of the stored bytes instead of a copy."""
        return self.get(key, offset, length)

    def put(self, key: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        """Stores `data` under `key`, replacing any object there. Atomic (readers see the old or the
        new object, never a part) and, unless durable=False, durable when it returns.

        durable=False lets a backend that writes through a cache (a local disk) defer the flush to
        a later `sync` of many keys at once; a crash may then lose or truncate the object, so
        nothing may refer to it before that sync."""
        self._put(check_key(key), data, durable)

    def sync(self, keys: list[str]) -> None:  # noqa: B027 (a default, not abstract)
        """Makes objects put with durable=False durable. Object stores whose puts are always
        durable need not override this."""

    def exists(self, key: str) -> bool:
        return self._exists(check_key(key))

    def delete(self, key: str) -> None:
        """Deletes the object; a missing one is fine."""
        self._delete(check_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with `prefix` (a plain string prefix, as in S3), in no particular order."""
        return self._list(_check_prefix(prefix))

    def check(self) -> None:
        """Verifies, once at start-up, that objects can be written, read, listed and deleted.
        Raises StorageError naming the cause (no such bucket, no credentials, access denied...);
        permanent failures are not retried."""
        key = f"check/{os.urandom(8).hex()}"
        try:
            self.put(key, b"pfs")
            if self.get(key) != b"pfs":
                raise StorageError(f"{self.url}: an object read back differs from what was written")
            if key not in self.list("check/"):
                raise StorageError(f"{self.url}: an object written is not listed")
            self.delete(key)
        except StorageError as exc:
            raise StorageError(f"cannot use the object store: {exc}") from exc.__cause__
        except Exception as exc:
            raise StorageError(f"cannot use the object store {self.url}: {one_line(exc)}") from exc

    def is_temp_failure(self, exc: BaseException) -> bool:
        """Whether `exc` is a temporary failure worth retrying (throttling, timeouts, ...)."""
        return False

    def describe(self, exc: BaseException) -> str:
        """`exc` (one of sdk_errors) in one line for people."""
        return one_line(exc)

    def close(self) -> None:  # noqa: B027 (a default, not abstract)
        pass

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abstractmethod
    def _get(self, key: str, offset: int, length: int | None) -> bytes: ...

    @abstractmethod
    def _put(self, key: str, data: bytes | memoryview, durable: bool) -> None: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[str]: ...


def retrying(method):
    """Decorates an ObjectStore backend method to retry it on temporary failures.

    Backoff is exponential with full jitter (a uniform random delay under a doubling ceiling),
    bounded by the store's retry_attempts and retry_timeout. Permanent failures propagate at once.
    """

    name = method.__name__.lstrip("_")

    @functools.wraps(method)
    def wrapper(self: ObjectStore, *args, **kwargs):
        deadline = monotonic() + self.retry_timeout
        attempt = 0
        while True:
            try:
                with self._slots:
                    return method(self, *args, **kwargs)
            except Exception as exc:
                attempt += 1
                delay = random.uniform(0, self.retry_delay * 2 ** (attempt - 1))
                temporary = self.is_temp_failure(exc)
                out_of_time = monotonic() + delay > deadline
                if not temporary or attempt >= self.retry_attempts or out_of_time:
                    if temporary or isinstance(exc, self.sdk_errors):
                        why = self.describe(exc)
                        raise StorageError(f"{self.url}: {name} failed: {why}") from exc
                    raise
                log.warning(
                    "%s: %s failed (%s), retry %d in %.2fs",
                    self.url,
                    name,
                    one_line(exc),
                    attempt,
                    delay,
                )
                sleep(delay)

    return wrapper


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (SDK messages go on with request ids and XML)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
