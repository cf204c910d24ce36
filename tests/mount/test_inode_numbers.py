"""A plain listing numbers a batch of names at once (InodeTable.numbers): each name gets the
number a lookup gives it, also where the table numbers it otherwise than by its path's hash."""

from __future__ import annotations

from pfsfuse.mount.inodes import Inode, InodeTable


def _one_by_one(t: InodeTable, parent: str, names: list[str], links: list[int]) -> list[int]:
    number = t.numbering("r", "master", parent)
    return [number(name, link) for name, link in zip(names, links, strict=True)]


def test_a_batch_is_numbered_as_each_name_would_be():
    t = InodeTable()
    names = [f"f{i:04d}" for i in range(500)]
    links = [0] * len(names)
    fresh = t.numbers("r", "master", "d", names, links)
    assert fresh[0] == [n.encode() for n in names]
    assert fresh[1] == _one_by_one(t, "d", names, links) and len(set(fresh[1])) == len(names)

    looked = t.of("entry", "r", "master", "d/f0007")  # held by the table: the same number
    held = t.numbers("r", "master", "d", names, links)[1]
    assert held[7] == looked.ino and held == fresh[1]

    t.of("entry", "r", "master", "d/f0010")
    t.renamed(("r", "master", "d/f0010"), ("r", "master", "d/moved"))  # keeps its number
    moved = t.numbers("r", "master", "d", ["moved", "f0011"], [0, 0])[1]
    assert moved[0] == t.of("entry", "r", "master", "d/moved").ino == fresh[1][10]
    assert moved == _one_by_one(t, "d", ["moved", "f0011"], [0, 0])
    # the rename is in another directory's batch only under its own parent
    assert t.numbers("r", "master", "e", ["moved"], [0])[1] == _one_by_one(t, "e", ["moved"], [0])
    # Once the kernel forgets it, "moved" is numbered by its path's hash again.
    held = t.of("entry", "r", "master", "d/moved")
    t.forget([(held.ino, held.lookups + 1)])
    again = t.numbers("r", "master", "d", ["moved"], [0])[1][0]
    assert again != fresh[1][10] and again == t.of("entry", "r", "master", "d/moved").ino

    linked = t.numbers("r", "master", "d", ["a", "b", "c"], [0, 5, 5])[1]  # two names of one link
    assert linked[1] == linked[2] != linked[0]
    assert linked == _one_by_one(t, "d", ["a", "b", "c"], [0, 5, 5])


def test_a_name_shifted_by_a_collision_keeps_its_shifted_number():
    t = InodeTable()
    natural = t.numbers("r", "master", "", ["x"], [0])[1][0]
    # Another path already holds x's number: x is shifted past it, as `of` shifts it.
    t.add(Inode(natural, "entry", "r", "master", "other"))
    shifted = t.numbers("r", "master", "", ["x"], [0])[1][0]
    assert shifted != natural and shifted == t.of("entry", "r", "master", "x").ino
