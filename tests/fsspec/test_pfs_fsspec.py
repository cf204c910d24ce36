"""pfs:// through fsspec and the tools that use it: pandas, pyarrow, DuckDB."""

from __future__ import annotations

import errno
import io
import os

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import fsspec
from pfsfuse.sdk import Put


def test_urls_refs_and_listing(pfs):
    pfs.pipe({"pfs://data@master/a/x.txt": b"one", "pfs://data@master/a/y.txt": b"two", "data@master/b": b"3"})
    first = pfs.client.inspect_branch("data", "master").head
    assert len(list(pfs.client.list_commit("data"))) == 1  # pipe of a dict is one commit
    pfs.pipe_file("pfs://data@master/a/x.txt", b"ONE")
    assert pfs.ls("pfs://data@master", detail=False) == ["data@master/a", "data@master/b"]
    assert pfs.cat("pfs://data@master/a/x.txt") == b"ONE"
    assert pfs.cat(f"pfs://data@{first}/a/x.txt") == b"one"  # a commit id
    assert pfs.cat("pfs://data@master^1/a/x.txt") == b"one"  # an ancestry ref
    assert pfs.find("data@master") == ["data@master/a/x.txt", "data@master/a/y.txt", "data@master/b"]
    assert pfs.glob("pfs://data@master/a/*.txt") == ["data@master/a/x.txt", "data@master/a/y.txt"]
    assert [p for p, _, _ in pfs.walk("data@master")] == ["data@master", "data@master/a"]
    info = pfs.info("pfs://data@master/a/x.txt")
    assert info["type"] == "file" and info["size"] == 3 and info["commit"] != first
    assert pfs.isdir("data@master/a") and not pfs.exists("data@master/nope")
    assert pfs.ls("")[0]["name"] == "data@master"
    with pytest.raises(FileNotFoundError):
        pfs.cat("pfs://data@master/nope")
    with pytest.raises(FileNotFoundError):
        pfs.ls("pfs://data@nosuch/")
    with pytest.raises(ValueError, match="expected pfs://REPO@REF/PATH"):
        pfs.ls("pfs://data/a")
    with pytest.raises(ValueError):
        pfs.cat("pfs://data@master/a/../b")


def test_ranges_read_ahead_checksum(pfs):
    body = bytes(range(256)) * 40_000  # about 10 MiB: several chunks
    pfs.pipe_file("data@master/big", body)
    assert pfs.cat_file("data@master/big", start=5, end=20) == body[5:20]
    assert pfs.cat_file("data@master/big", start=-10) == body[-10:]
    with pfs.open("pfs://data@master/big", block_size=1 << 20) as f:
        assert f.read(10) == body[:10]
        f.seek(3_000_000)
        assert f.read(100) == body[3_000_000:3_000_100]
        pfs.pipe_file("data@master/big", b"replaced")  # the open file stays on its commit
        assert f.read(50) == body[3_000_100:3_000_150]
    # Sequential reads continue one stream; a seek back or ahead starts another where it lands.
    body = os.urandom(5 << 20)
    pfs.pipe_file("data@master/random", body)
    with pfs.open("pfs://data@master/random", block_size=100_000) as f:
        got = [f.read(n) for n in (1, 99_999, 333_333, 1_000_000)]
        assert b"".join(got) == body[:1_433_333]
        for at, n in ((10, 5000), (4_000_000, 2_000_000), (1_000_000, 700_000), (1_700_000, 300_000)):
            f.seek(at)
            assert f.read(n) == body[at : at + n], at
    pfs.pipe_file("data@master/copy", bytes(range(256)) * 40_000)
    assert pfs.checksum("data@master/copy") != pfs.checksum("data@master/big")
    pfs.pipe_file("data@master/same", b"replaced")
    assert pfs.checksum("data@master/same") == pfs.checksum("data@master/big")
    assert pfs.ukey("data@master/same") == pfs.info("data@master/big")["hash"]


def test_listing_cache_follows_the_branch(pfs):
    pfs.pipe_file("data@master/one", b"1")
    pinned = pfs.client.inspect_branch("data", "master").head
    assert pfs.ls(f"data@{pinned}", detail=False) == [f"data@{pinned}/one"]
    calls = []
    real = pfs.client.list_file
    pfs.client.list_file = lambda *a, **k: calls.append(a) or real(*a, **k)
    pfs.ls(f"data@{pinned}")
    assert calls == []  # a finished commit's listing never expires
    pfs.pipe_file("data@master/two", b"2")
    assert pfs.ls("data@master", detail=False) == ["data@master/one", "data@master/two"]
    assert pfs.ls(f"data@{pinned}", detail=False) == [f"data@{pinned}/one"]


def test_writes_only_into_branches(pfs):
    pfs.pipe_file("data@master/a", b"1")
    head = pfs.client.inspect_branch("data", "master").head
    for target in (f"data@{head}/b", "data@master^1/b"):
        with pytest.raises(PermissionError) as e:
            pfs.pipe_file(target, b"2")
        assert e.value.errno == errno.EROFS
    with pytest.raises(PermissionError):
        pfs.rm(f"data@{head}/a")
    assert pfs.client.inspect_branch("data", "master").head == head


def test_transaction_is_one_commit(pfs, tmp_path):
    pfs.pipe_file("data@master/old", b"0")
    before = len(list(pfs.client.list_commit("data")))
    with pfs.transaction:
        with pfs.open("data@master/t/1", "wb") as f:
            f.write(b"one")
        pfs.pipe_file("data@master/t/2", b"two")
        pfs.cp_file("data@master/old", "data@master/t/3")
        pfs.rm("data@master/old")
    assert len(list(pfs.client.list_commit("data"))) == before + 1
    assert pfs.find("data@master") == ["data@master/t/1", "data@master/t/2", "data@master/t/3"]
    head = pfs.client.inspect_branch("data", "master").head
    with pytest.raises(RuntimeError):
        with pfs.transaction:
            pfs.pipe_file("data@master/t/4", b"four")
            with pfs.open("data@master/t/5", "wb") as f:
                f.write(b"five")
            raise RuntimeError("abandon")
    assert pfs.client.inspect_branch("data", "master").head == head  # nothing half-committed
    assert not pfs.exists("data@master/t/4")
    (tmp_path / "up").mkdir()
    for i in range(3):
        (tmp_path / "up" / f"{i}.txt").write_bytes(b"%d" % i)
    pfs.put(str(tmp_path / "up"), "data@master/up", recursive=True)  # one commit
    assert len(list(pfs.client.list_commit("data"))) == before + 2
    pfs.get("data@master/up", str(tmp_path / "down"), recursive=True)
    assert sorted(p.name for p in (tmp_path / "down").iterdir()) == ["0.txt", "1.txt", "2.txt"]


def test_pandas_csv_and_parquet(pfs, address):
    pfs.client.write(
        "data@master",
        [
            Put("days", stream=io.BytesIO(b"day,amount\n"), frame="header"),  # one header for the glob
            Put("days/01.csv", stream=io.BytesIO(b"mon,3\n")),
            Put("days/02.csv", stream=io.BytesIO(b"tue,4\n")),
            Put("full/a.csv", stream=io.BytesIO(b"day,amount\nwed,5\n")),
        ],
    )
    df = pd.read_csv("pfs://data@master/days/*.csv")
    assert df.to_dict("list") == {"day": ["mon", "tue"], "amount": [3, 4]}
    assert pd.read_csv("pfs://data@master/full/a.csv")["amount"].tolist() == [5]
    frames = [pd.read_csv(f"pfs://{p}") for p in pfs.glob("pfs://data@master/full/*.csv")]
    assert len(frames) == 1
    out = pd.DataFrame({"x": range(1000), "y": [f"v{i}" for i in range(1000)]})
    out.to_parquet("pfs://data@master/t.parquet")
    back = pd.read_parquet("pfs://data@master/t.parquet")
    assert back.equals(out)
    back = pd.read_parquet("pfs://data@master/t.parquet", columns=["y"])
    assert back["y"].tolist()[-1] == "v999"


def test_pyarrow_dataset(pfs):
    for part in range(3):
        table = pa.table({"n": list(range(10))})  # "part" comes from the path
        with pfs.open(f"data@master/ds/part={part}/f.parquet", "wb") as f:
            pq.write_table(table, f)
    dataset = ds.dataset("data@master/ds", filesystem=pfs, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=ds.field("part") == 2)
    assert table.num_rows == 10 and set(table.column("part").to_pylist()) == {2}
    assert dataset.count_rows() == 30


def test_duckdb(pfs):
    pfs.pipe_file("data@master/s.csv", b"k,v\na,1\nb,2\nc,3\n")
    con = duckdb.connect()
    con.register_filesystem(fsspec.filesystem("pfs", skip_instance_cache=True))
    assert con.execute("select sum(v) from read_csv('pfs://data@master/s.csv')").fetchall() == [(6,)]
    con.execute(
        "copy (select * from read_csv('pfs://data@master/s.csv') where v > 1) "
        "to 'pfs://data@master/out.parquet' (format parquet)"
    )
    assert con.execute("select k from 'pfs://data@master/out.parquet' order by k").fetchall() == [("b",), ("c",)]
