"""What the store's tests of puts that name their changed ranges share (importable as `storekit`:
pytest puts this folder on sys.path, since it has no __init__.py)."""

from __future__ import annotations

import os

from hypothesis import strategies as st

MiB = 1 << 20

# A writer's steps on a file of a few MiB: writes, truncates (shrinking and growing) and syncs.
change_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 7 * MiB), st.integers(1, 300_000)),
        st.tuples(st.just("truncate"), st.integers(0, 7 * MiB)),
        st.just(("sync",)),
    ),
    min_size=1,
    max_size=10,
)


def write_at(local: str, off: int, data: bytes) -> tuple[int, int]:
    """pwrite `data` into the file `local` at `off`; the (offset, length) it changed."""
    fd = os.open(local, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    return off, len(data)
