"""Which chunks an fsync's changed ranges touch (`recut.plan`): every changed or new byte is cut
again, every kept chunk lies where it was and holds no changed byte, in file order."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pfsfuse.chunks.recut import Keep, Recut, plan

_sizes = st.lists(st.integers(1, 100), max_size=12)
_ranges = st.lists(st.tuples(st.integers(0, 1300), st.integers(0, 200)), max_size=8)


@given(_sizes, st.integers(0, 1300), _ranges)
def test_a_plan_covers_the_new_content_and_keeps_only_untouched_chunks(sizes, size, changed):
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    old = sum(sizes)
    steps = plan(sizes, size, changed)
    at = 0
    for step in steps:
        if isinstance(step, Keep):
            start, end = starts[step.start], starts[step.stop - 1] + sizes[step.stop - 1]
            assert step.stop > step.start and end <= min(old, size), "a kept chunk past the content's end"
            assert not any(off < end and start < off + n for off, n in changed if n), "a changed byte kept"
        else:
            start, end = step.start, step.end
        assert start == at and end > start, "the steps leave a gap, overlap or are empty"
        at = end
    assert at == size
    kept = [i for s in steps if isinstance(s, Keep) for i in range(s.start, s.stop)]
    assert kept == sorted(set(kept))
    assert not any(isinstance(a, Keep) and isinstance(b, Keep) for a, b in itertools.pairwise(steps)), "runs not joined"


def test_a_few_small_writes_cut_again_only_the_chunks_they_touch_and_finely():
    sizes = [1000] * 10
    steps = plan(sizes, 10_000, [(2500, 4), (2990, 20), (7000, 1)])
    assert steps == [Keep(0, 2), Recut(2000, 4000, fine=True), Keep(4, 7), Recut(7000, 8000, fine=True), Keep(8, 10)]


def test_an_append_recuts_the_last_chunk_with_the_new_bytes():
    """The last chunk ended only because the file did: with what follows it, it is cut as a
    put-file of the whole would cut it (normal chunks, when most of the bytes are new)."""
    assert plan([1000, 300], 5000, []) == [Keep(0, 1), Recut(1000, 5000, fine=False)]
    assert plan([1000, 300], 1400, []) == [Keep(0, 1), Recut(1000, 1400, fine=True)]
    assert plan([], 10, []) == [Recut(0, 10, fine=False)]


def test_a_shrink_keeps_whole_chunks_and_cuts_the_new_last_one():
    assert plan([1000, 1000, 1000], 1500, []) == [Keep(0, 1), Recut(1000, 1500, fine=True)]
    assert plan([1000, 1000, 1000], 2000, []) == [Keep(0, 2)]
    assert plan([1000], 0, [(0, 5)]) == []
    assert plan([1000, 1000], 1000, [(1500, 10)]) == [Keep(0, 1)]


@given(_sizes, st.integers(0, 1300), _ranges)
def test_a_recut_is_fine_when_most_of_its_bytes_are_unchanged(sizes, size, changed):
    old = sum(sizes)
    for step in plan(sizes, size, changed):
        if isinstance(step, Recut):
            new = {i for off, n in changed for i in range(off, off + n) if step.start <= i < step.end}
            new |= set(range(max(step.start, old), step.end))
            assert step.fine == (2 * len(new) < step.end - step.start)
