"""Shared fixtures: temporary PFS_HOMEs and real daemons in subprocesses."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Daemon


@pytest.fixture
def tmp_home() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="pfs-", dir="/tmp"))
    try:
        yield path
    finally:
        if not os.environ.get("PFS_KEEP_TMP"):  # set it to read a failed test's daemon logs
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(tmp_home: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_home / "home")
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()
