"""Garbage collection against direct writes: a client stores the chunks in packs itself before its
request, so the collector sees its packs unindexed (orphans) or, while the request indexes them file
by file, partly indexed. A write whose packs a collection deleted fails, saying so, and commits
nothing: it never indexes chunks in a pack that is gone."""

from __future__ import annotations

import io
import os
import threading

import pytest

from pfsfuse.api.types import Put, located_bytes
from pfsfuse.chunks import pack_key
from pfsfuse.metadata.errors import FailedPrecondition
from pfsfuse.metadata.records import ChunkRef


@pytest.fixture
def store(store):
    store.create_repo("r")
    return store


def stored_by_a_client(store, files: dict[str, bytes]) -> tuple[list[Put], bytes]:
    """Puts of `files` as a direct-write client sends them, their chunks stored in one pack of its
    own beforehand; and that pack."""
    refs: dict[str, list[ChunkRef]] = {}
    where = {}
    with store.chunks.writer() as writer:
        for path, data in files.items():
            refs[path] = []
            for piece in store.chunks.chunker.cut(io.BytesIO(data)):
                h = store.chunks.hash(piece)
                refs[path].append(ChunkRef(h, len(piece)))
                where.update(writer.add(h, piece))
        where.update(writer.flush())
    ops = []
    for path, chunks in refs.items():
        located = [(r, where[r.hash]) for r in chunks]
        ops.append(Put(path, chunks=located, proof=store.chunks.sign(located_bytes(located))))
    [pack] = {loc.pack for loc in where.values()}
    return ops, pack


def then_a_normal_write_of_the_same_data_reads_back(store, data: bytes) -> None:
    """No index entry was left pointing into a deleted pack (a later writer would deduplicate
    against it)."""
    store.write_files("r", "master", [Put("again", stream=io.BytesIO(data))])
    assert b"".join(store.get_file("r", "master", "again")) == data


def test_a_write_whose_packs_were_collected_before_it_arrived_fails(store):
    data = os.urandom(5000)
    ops, pack = stored_by_a_client(store, {"f": data})
    store.garbage_collect(orphan_age=0)  # the client took longer than the orphan age
    assert not store.objects.exists(pack_key(pack))
    with pytest.raises(FailedPrecondition, match=f"pack {pack.hex()}, stored by this client, is gone"):
        store.write_files("r", "master", ops)
    assert store.list_commit("r") == []
    then_a_normal_write_of_the_same_data_reads_back(store, data)


@pytest.mark.parametrize("moment", ["listed", "deleting"])
def test_a_write_whose_packs_a_running_collection_condemns_fails(store, monkeypatch, moment):
    """The write starts once the collection listed the packs (so it does not wait for it), and
    checks that its pack exists either before the collection condemns it or after the collection
    condemned it but before it deleted it; it then waits until the collection is over."""
    data = os.urandom(5000)
    ops, pack = stored_by_a_client(store, {"f": data})
    checked, go = threading.Event(), threading.Event()
    exists = store.objects.exists

    def checking(key: str) -> bool:
        there = exists(key)
        if threading.current_thread() is writer:
            checked.set()
            assert go.wait(30)
        return there

    monkeypatch.setattr(store.objects, "exists", checking)
    failed: list[BaseException] = []

    def write() -> None:
        try:
            store.write_files("r", "master", ops)
        except FailedPrecondition as e:
            failed.append(e)

    writer = threading.Thread(target=write)

    def start_the_write() -> None:
        writer.start()
        assert checked.wait(30)

    if moment == "listed":
        scan = store.db.scan

        def scanning(cf: str, *args, **kwargs):
            yield from scan(cf, *args, **kwargs)
            if cf == "chunks" and not writer.is_alive():
                start_the_write()

        monkeypatch.setattr(store.db, "scan", scanning)
    else:
        delete = store.objects.delete

        def deleting(key: str) -> None:
            if key == pack_key(pack):
                start_the_write()
            delete(key)

        monkeypatch.setattr(store.objects, "delete", deleting)
    try:
        assert store.garbage_collect(orphan_age=0).orphan_packs == 1
    finally:
        go.set()
        writer.join(30)
    assert writer.ident is not None  # it did run
    assert [str(e) for e in failed] == [
        f"pack {pack.hex()}, stored by this client, is being deleted by a garbage collection that ran while "
        "the write did; write again"
    ]
    assert store.list_commit("r") == []
    then_a_normal_write_of_the_same_data_reads_back(store, data)


def test_a_pack_rewritten_between_the_files_of_a_write_is_not_indexed_again(store, monkeypatch):
    """A request's first file is indexed in the client's pack, then a collection rewrites the pack
    without the second file's chunks (not indexed: nothing refers to them as far as it knows)."""
    first, second = os.urandom(5000), os.urandom(5000)
    ops, pack = stored_by_a_client(store, {"first": first, "second": second})
    between, go = threading.Event(), threading.Event()
    record = store.record_locations
    calls = []

    def recording(*args) -> None:
        calls.append(args)
        if len(calls) == 2:  # the second file's
            between.set()
            assert go.wait(30)
        record(*args)

    monkeypatch.setattr(store, "record_locations", recording)
    failed: list[BaseException] = []

    def write() -> None:
        try:
            store.write_files("r", "master", ops)
        except FailedPrecondition as e:
            failed.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert between.wait(30)
        assert store.garbage_collect(orphan_age=0).packs_rewritten == 1
        assert not store.objects.exists(pack_key(pack))
    finally:
        go.set()
        writer.join(30)
    assert len(failed) == 1 and "is being deleted by a garbage collection" in str(failed[0])
    assert store.list_commit("r") == []
    then_a_normal_write_of_the_same_data_reads_back(store, first + second)
