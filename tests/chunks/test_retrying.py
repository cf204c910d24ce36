"""The retry decorator, on a fake backend: retries, errors, calls in flight."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pfsfuse.chunks import ObjectStore, StorageError, objects, retrying


class TempError(Exception):
    pass


class FlakyStore(ObjectStore):
    """get fails with the queued errors, in order, then succeeds."""

    url = "fake://"
    retry_attempts = 4

    def __init__(self, errors):
        super().__init__()
        self.errors = list(errors)
        self.calls = 0

    def is_temp_failure(self, exc):
        return isinstance(exc, TempError)

    @retrying
    def _get(self, key, offset, length):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return b"ok"

    def _put(self, key, data, durable): ...
    def _exists(self, key): ...
    def _delete(self, key): ...
    def _list(self, prefix): ...


@pytest.fixture
def sleeps(monkeypatch):
    """Records the backoff delays; time passes only by them."""
    delays = []
    monkeypatch.setattr(objects, "sleep", delays.append)
    monkeypatch.setattr(objects, "monotonic", lambda: sum(delays))
    return delays


def test_temp_failures_retried(sleeps):
    store = FlakyStore([TempError(), TempError()])
    assert store.get("k") == b"ok"
    assert store.calls == 3
    # full jitter under a doubling ceiling
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= store.retry_delay
    assert 0 <= sleeps[1] <= 2 * store.retry_delay


def test_permanent_failure_raises_at_once(sleeps):
    store = FlakyStore([KeyError("permanent"), TempError()])
    with pytest.raises(KeyError):
        store.get("k")
    assert store.calls == 1
    assert sleeps == []


def test_attempts_bounded(sleeps):
    store = FlakyStore([TempError()] * 10)
    with pytest.raises(StorageError, match="fake://: get failed") as excinfo:
        store.get("k")
    assert isinstance(excinfo.value.__cause__, TempError)
    assert store.calls == store.retry_attempts
    assert len(sleeps) == store.retry_attempts - 1


def test_total_time_bounded(sleeps, monkeypatch):
    monkeypatch.setattr(objects.random, "uniform", lambda low, high: high)
    store = FlakyStore([TempError()] * 10)
    store.retry_delay = 1.0
    store.retry_timeout = 3.5  # room for backoffs of 1 s and 2 s, not for the next of 4 s
    with pytest.raises(StorageError):
        store.get("k")
    assert sleeps == [1.0, 2.0]
    assert store.calls == 3


class SdkError(Exception):
    pass


def test_sdk_errors_become_storage_errors(sleeps):
    store = FlakyStore([SdkError("AccessDenied: no\nRequestId: 1234")])
    store.sdk_errors = (SdkError,)
    with pytest.raises(StorageError, match="^fake://: get failed: AccessDenied: no$"):
        store.get("k")
    assert sleeps == []


def test_calls_in_flight_bounded():
    class SlowStore(FlakyStore):
        max_in_flight = 3

        def __init__(self):
            super().__init__([])
            self.lock = threading.Lock()
            self.now = self.most = 0

        @retrying
        def _get(self, key, offset, length):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.01)
            with self.lock:
                self.now -= 1
            return b"ok"

    store = SlowStore()
    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(lambda i: store.get("k"), range(40))) == {b"ok"}
    assert store.most == 3
