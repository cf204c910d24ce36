"""The file engine in-process: a fresh store per test, checked with fsck when the test ends."""

from __future__ import annotations

import pytest

from pfsfuse.home import Home
from pfsfuse.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(Home(tmp_path / "home"))
    try:
        yield s
    finally:
        assert s.fsck() == []
        s.close()
