"""Fixtures of the mount's integration tests: real `pfs mount`s of a real daemon, driven by real
tools. Every mount is unmounted (and its process gone) before its daemon stops."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mountkit import View, make_tree

from helpers import Daemon, Mount


@pytest.fixture
def view(daemon: Daemon) -> Iterator[View]:
    v = View(daemon)
    try:
        yield v
    finally:
        v.close()


@pytest.fixture
def mnt(tmp_home: Path) -> Path:
    """An empty directory to mount on."""
    path = tmp_home / "mnt"
    path.mkdir()
    return path


@pytest.fixture
def mounts(daemon: Daemon, tmp_home: Path) -> Iterator[Callable[..., Mount]]:
    """start(*ARGS, at=DIR, foreground=False) mounts the daemon's store at DIR (default
    $tmp/mnt) with `pfs mount DIR ARGS...` and returns the Mount; teardown unmounts every mount
    started (newest first) with `pfs unmount` and then makes sure nothing is left mounted."""
    started: list[Mount] = []

    def start(*args: str, at: Path | None = None, foreground: bool = False, **kw) -> Mount:
        where = at if at is not None else tmp_home / "mnt"
        where.mkdir(exist_ok=True)
        m = Mount(daemon, where, *args, foreground=foreground, **kw)
        started.append(m)
        return m.start()

    try:
        yield start
    finally:
        errors = []
        for m in reversed(started):
            try:
                m.__exit__(None, None, None)
            except BaseException as e:  # clean up the others first, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def src_tree(tmp_home: Path) -> Path:
    return make_tree(tmp_home / "src")
