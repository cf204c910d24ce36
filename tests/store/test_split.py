"""Split files (put-file --split line|json|sql), headers and footers, list-file --history."""

from __future__ import annotations

import io
import json
import random

import pytest

from pfsfuse import split
from pfsfuse.api.types import Delete, Put
from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, NotFound

PG_DUMP = b"""--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET client_encoding = 'UTF8';

CREATE TABLE public.users (id integer, name text);

COPY public.users (id, name) FROM stdin;
1\talice
2\tbob
3\tcarol {with braces}
\\.


--
-- PostgreSQL database dump complete
--

"""


def put(store, path: str, data: bytes, ref: str = "master", **options):
    return store.write_files("r", ref, [Put(path, stream=io.BytesIO(data), **options)])


def read(store, path: str, ref: str = "master") -> bytes:
    return b"".join(store.get_file("r", ref, path))


def records(store, path: str) -> list[bytes]:
    return [read(store, f.path) for f in store.list_file("r", "master", path)]


@pytest.fixture
def store(store):
    store.create_repo("r")
    return store


def test_line_split_makes_a_directory_of_records_numbered_on_by_later_puts(store):
    put(store, "users", b"a,1\nb,2\nc,3", split="line")
    [d] = store.list_file("r", "master")
    assert (d.path, d.type, d.size, d.children) == ("users", "dir", 11, 3)
    names = [f.path for f in store.list_file("r", "master", "users")]
    assert names == ["users/0000000000000000", "users/0000000000000001", "users/0000000000000002"]
    assert records(store, "users") == [b"a,1\n", b"b,2\n", b"c,3"]
    put(store, "users", b"d,4\ne,5\n", split="line")
    assert [f.path[-2:] for f in store.list_file("r", "master", "users")] == ["00", "01", "02", "03", "04"]
    assert read(store, "users/*") == b"a,1\nb,2\nc,3d,4\ne,5\n"
    # Numbering goes on after the last record even when some were deleted or other names mingle.
    store.write_files("r", "master", [Delete("users/0000000000000001"), Put("users/abc", stream=io.BytesIO(b"x"))])
    put(store, "users", b"f\n", split="line")
    assert read(store, "users/0000000000000005") == b"f\n"


def test_targets_bound_datums_and_bytes_per_record(store):
    lines = b"".join(b"%d\n" % i * random.Random(i).randrange(1, 5) for i in range(1000))
    put(store, "by-count", lines, split="line", target_datums=7)
    got = records(store, "by-count")
    assert b"".join(got) == lines and all(r.count(b"\n") == 7 for r in got[:-1])
    put(store, "by-size", lines, split="line", target_bytes=100)
    got = records(store, "by-size")
    assert b"".join(got) == lines and all(len(r) <= 100 for r in got)
    assert all(len(a) + len(b.split(b"\n")[0]) + 1 > 100 for a, b in zip(got, got[1:], strict=False))
    put(store, "one-long-line", b"x" * 500 + b"\nshort\n", split="line", target_bytes=100)
    assert records(store, "one-long-line") == [b"x" * 500 + b"\n", b"short\n"]


def test_big_split_streams_through_small_blocks(store, monkeypatch):
    monkeypatch.setattr(split, "BLOCK", 4096)  # records cross block boundaries everywhere
    rng = random.Random(5)
    data = b"".join(b"y" * rng.randrange(0, 2000) + b"\n" for _ in range(3000))
    put(store, "d", data, split="line", target_datums=10)
    assert store.inspect_file("r", "master", "d").children == 300
    assert read(store, "d/*") == data


def test_json_split_takes_each_top_level_value_as_a_datum(store, monkeypatch):
    monkeypatch.setattr(split, "BLOCK", 1024)
    values = [
        {"name": "brace } and { in a string", "list": [1, 2, {"deep": "]"}]},
        [1, 2, 3],
        'a string with " quotes',
        42,
        None,
    ] * 40
    rng = random.Random(1)
    stream = "".join(json.dumps(v, indent=rng.choice([None, 2])) + rng.choice([" ", "\n", "\n\n"]) for v in values)
    put(store, "values", stream.encode(), split="json", target_datums=2)
    got = records(store, "values")
    assert len(got) == 100 and b"".join(got) == stream.encode()
    assert [v for r in got for v in _values(r.decode())] == values


def _values(text: str) -> list:
    out, at, dec = [], 0, json.JSONDecoder()
    while text[at:].strip():
        value, at = dec.raw_decode(text, len(text) - len(text[at:].lstrip()))
        out.append(value)
    return out


def test_malformed_json_is_refused_and_nothing_is_written(store):
    put(store, "keep", b"1")
    for bad, where in ((b'{"a": 1}\n{"b": ]', "byte 15"), (b'{"a": "unterminated', "byte 6"), (b"[1, 2", "byte 5")):
        with pytest.raises(InvalidArgument, match=f"malformed JSON at {where}"):
            put(store, "values", bad, split="json")
    assert len(store.list_commit("r")) == 1


def test_sql_split_keeps_the_statements_around_the_rows_as_header_and_footer(store):
    put(store, "users", PG_DUMP, split="sql")
    d = store.inspect_file("r", "master", "users")
    assert d.type == "dir" and d.children == 3
    head, _, rest = PG_DUMP.partition(b"FROM stdin;\n")
    foot = rest[rest.index(b"\\.\n") :]
    assert read(store, "users") == head + b"FROM stdin;\n" + foot
    assert read(store, "users/0000000000000001") == head + b"FROM stdin;\n2\tbob\n" + foot
    assert read(store, "users/*") == PG_DUMP
    put(store, "users", PG_DUMP.replace(b"1\talice", b"4\tdave"), split="sql")
    assert store.inspect_file("r", "master", "users").children == 6


@pytest.mark.parametrize(
    "dump, error",
    [
        (b"SET x = 1;\nCREATE TABLE t (a int);\n", "no 'COPY ... FROM stdin;' line"),
        (b"PGDMP\x01\x0e\x00binary", "custom-format pg_dump"),
        (b"COPY t (a) FROM stdin;\n1\n2\n", "do not end with a '\\\\.' line"),
        (PG_DUMP + PG_DUMP[PG_DUMP.index(b"COPY") :], "more than one table"),
    ],
)
def test_bad_pg_dumps_are_refused(store, dump, error):
    with pytest.raises(InvalidArgument, match=error):
        put(store, "users", dump, split="sql")
    assert store.list_commit("r") == []


def test_headers_and_footers_frame_every_file_of_their_directory(store):
    put(store, "users", b"4,alice\n7,bob\n", split="line")
    put(store, "users", b"id,name\n", frame="header")
    put(store, "users", b"-- end\n", frame="footer")
    assert read(store, "users/0000000000000000") == b"id,name\n4,alice\n-- end\n"
    assert read(store, "users") == b"id,name\n-- end\n"
    assert read(store, "users/*") == b"id,name\n4,alice\n7,bob\n-- end\n"
    assert b"".join(store.get_file("r", "master", "users/0000000000000001", 3, 9)) == b"name\n7,bo"
    plan = store.read_plan("r", "master", "users/0000000000000000")
    assert plan.info.size == 8 and sum(c.size for c, _ in plan.chunks) == 8 + 8 + 7
    # Sizes listed are the records' own, as in pachctl.
    assert [f.size for f in store.list_file("r", "master", "users")] == [8, 6]
    # A glob over several directories frames each run of files with its own directory's frame.
    put(store, "more/0000000000000000", b"x\n")
    assert read(store, "*/*") == b"x\nid,name\n4,alice\n7,bob\n-- end\n"
    # An empty header, or a lone newline (`echo "" | pfs put-header`), removes it.
    put(store, "users", b"\n", frame="header")
    put(store, "users", b"", frame="footer")
    assert read(store, "users/*") == b"4,alice\n7,bob\n"
    with pytest.raises(InvalidArgument, match="is a directory; use -r"):
        read(store, "users")


def test_a_frame_goes_on_a_directory_only(store):
    put(store, "plain.csv", b"1,2\n")
    with pytest.raises(FailedPrecondition, match="plain.csv is a file: a header belongs on a directory"):
        put(store, "plain.csv", b"h\n", frame="header")
    with pytest.raises(NotFound, match="no directory gone"):
        put(store, "gone", b"", frame="footer")
    with pytest.raises(FailedPrecondition, match="cannot split into plain.csv: it is a file"):
        put(store, "plain.csv", b"a\n", split="line")
    assert len(store.list_commit("r")) == 1
    put(store, "new", b"h\n", frame="header")  # a header for records still to come
    put(store, "new", b"1\n", split="line")
    assert read(store, "new/*") == b"h\n1\n"


def test_list_file_history_lists_the_versions_of_each_path(store):
    c1 = put(store, "a", b"one").commit
    put(store, "b", b"other")
    c3 = put(store, "a", b"three").commit
    put(store, "b", b"other2")
    c5 = put(store, "a", b"five").commit
    versions = [(f.path, f.size, f.commit) for f in store.list_file("r", "master", "a", history=-1)]
    assert versions == [("a", 4, c5), ("a", 5, c3), ("a", 3, c1)]
    assert [f.commit for f in store.list_file("r", "master", "a", history=2)] == [c5, c3]
    listing = store.list_file("r", "master", "", history=-1)
    assert [f.path for f in listing] == ["a", "a", "a", "b", "b"]
    store.write_files("r", "master", [Delete("a")])
    put(store, "a", b"new")
    assert len(store.list_file("r", "master", "a", history=-1)) == 1  # history ends at a delete
    with pytest.raises(InvalidArgument):
        store.list_file("r", "master", "a", history=-5)
