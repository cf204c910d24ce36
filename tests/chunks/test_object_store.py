"""The ObjectStore contract, run against every backend (see the `store` fixture)."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from pfsfuse.chunks import ObjectNotFound

BAD_KEYS = ["", "/a", "a/", "a//b", "..", "a/../b", "a/./b", ".hidden", "a/.b", "a\0b"]


def test_put_get(store):
    store.put("a/b/c", b"hello world")
    assert store.get("a/b/c") == b"hello world"
    store.put("m", memoryview(b"from a view"))
    assert store.get("m") == b"from a view"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_ranged_get(store):
    store.put("k", b"0123456789")
    assert store.get("k", 3) == b"3456789"
    assert store.get("k", 3, 4) == b"3456"
    assert store.get("k", 0, 0) == b""
    assert store.get("k", 8, 100) == b"89"
    assert store.get("k", 10) == b""
    assert store.get("k", 20, 5) == b""
    assert store.get("k", -3) == b"789"
    assert store.get("k", -3, 2) == b"78"
    assert store.get("k", -100) == b"0123456789"
    with pytest.raises(ValueError):
        store.get("k", 0, -1)


def test_exists_and_delete(store):
    assert not store.exists("x/y")
    store.put("x/y", b"1")
    assert store.exists("x/y")
    assert not store.exists("x")  # a key prefix is not an object
    store.delete("x/y")
    assert not store.exists("x/y")
    with pytest.raises(ObjectNotFound):
        store.get("x/y")
    store.delete("x/y")  # deleting a missing object is fine
    store.delete("never/was")


def test_overwrite(store):
    store.put("k", b"first version, longer")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    assert list(store.list()) == ["k"]


def test_missing_key(store):
    with pytest.raises(ObjectNotFound, match="nope"):
        store.get("nope")
    with pytest.raises(ObjectNotFound):
        store.get("no/such/dir", 5, 5)


def test_list(store):
    assert list(store.list()) == []
    keys = ["packs/ab/1", "packs/ab/2", "packs/cd/3", "packsx", "pages/1", "top"]
    for key in keys:
        store.put(key, key.encode())
    assert sorted(store.list()) == keys
    assert sorted(store.list("packs/")) == keys[:3]
    assert sorted(store.list("packs")) == keys[:4]
    assert sorted(store.list("packs/a")) == keys[:2]
    assert sorted(store.list("packs/ab/2")) == ["packs/ab/2"]
    assert list(store.list("nothing/here")) == []
    store.delete("packs/cd/3")
    assert sorted(store.list("packs/")) == keys[:2]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_key_validation(store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        store.get(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.exists(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.delete(key)


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a/../", "a//", "a\0"])
def test_prefix_validation(store, prefix):
    with pytest.raises(ValueError, match="invalid object key prefix"):
        store.list(prefix)


def test_list_pages(store):
    store.page_size = 2  # backends without pages ignore it
    keys = [f"p/{i}" for i in range(7)]
    for key in keys:
        store.put(key, b"x")
    assert sorted(store.list("p/")) == keys


def test_large_object_ranges(store):
    data = os.urandom(5 << 20)
    store.put("big", memoryview(data))
    assert store.get("big") == data
    assert store.get("big", 1 << 20, 3 << 20) == data[1 << 20 : 4 << 20]
    assert store.get("big", -(64 << 10)) == data[-(64 << 10) :]
    assert store.get("big", -100, 10) == data[-100:-90]


def test_concurrent_use(store):
    datas = {f"c/{i}": os.urandom(50_000 + i) for i in range(24)}

    def round_trip(key):
        store.put(key, datas[key])
        assert store.get(key, 10, 100) == datas[key][10:110]
        return store.get(key)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(round_trip, datas)) == list(datas.values())
    assert sorted(store.list("c/")) == sorted(datas)


def test_check(store):
    store.check()
    assert list(store.list()) == []  # it cleans up after itself
