"""Named pipes of lazy inputs, served by threads and forked processes."""

import threading

import pytest

from pfsfuse.scheduler.pipes import SHARD, PipeFeeder


def _read(path, out: dict) -> None:
    with open(path, "rb") as f:
        out[path] = f.read()


@pytest.mark.parametrize("n", [10, SHARD + 10])  # one thread; two forked processes
def test_a_reader_that_comes_at_once_is_fed_and_so_is_the_next(tmp_path, n):
    feeder = PipeFeeder(lambda: lambda i: iter([b"data %d\n" % i]), str(tmp_path / "own"))
    for i in range(n):
        feeder.add(str(tmp_path / f"f{i:05d}"), i)
    feeder.start()
    try:
        got: dict = {}
        for _ in range(2):  # a pipe read again streams again
            t = threading.Thread(target=_read, args=(tmp_path / "f00007", got), daemon=True)
            t.start()
            t.join(timeout=10)
            assert not t.is_alive(), "the reader was never fed"
            assert got.pop(tmp_path / "f00007") == b"data 7\n"
    finally:
        feeder.stop()
    assert feeder.fed == 2 * len(b"data 7\n")
