"""list-file prints a listing a page at a time: what it prints equals the listing in one call."""

from __future__ import annotations

import io

from helpers import rows
from pfsfuse.api.types import Put, Symlink, WriteOp
from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.output import Output, size


def test_streamed_listing_equals_the_whole_listing(pfs, daemon, monkeypatch):
    monkeypatch.setattr(views, "FIRST_PAGE", 100)  # several pages, widths from the first
    monkeypatch.setattr(views, "LIST_PAGE", 700)
    client = daemon.client()
    try:
        client.create_repo("r")
        ops: list[WriteOp] = [Put(f"d/f{i:04}", stream=io.BytesIO(b"x" * i)) for i in range(1500)]
        # Wider cells only after the first page: a long name, a symlink's type, a big size.
        ops += [Put(f"d/g-{'long' * 20}", stream=io.BytesIO(b"y" * 200_000)), Symlink("d/h", "f0001")]
        client.write_files("r", "master", ops)
        client.write_files("r", "master", [Put("d/f0003", stream=io.BytesIO(b"changed"))])
        whole = client.list_file("r", "master", "d")
        assert len(whole) == 1502
        assert rows(pfs("list-file", "r", "master", "d").output) == [[f.path, f.type, size(f.size)] for f in whole]
        history = client.list_file("r", "master", "d", history=2)
        got = rows(pfs("list-file", "r", "master", "d", "--history", "2").output)
        assert got == [[f.commit, f.path, f.type, size(f.size)] for f in history] and len(got) == 1503
    finally:
        client.close()


def test_a_table_prints_its_first_rows_before_the_rest_are_known(capsys):
    printed = []

    def lines():
        for i in range(10):
            if i == 5:  # the rows after the window come one by one, after the first are out
                printed.append(capsys.readouterr().out)
            yield [f"name{i}", "file"]

    Output().table(["NAME", "TYPE"], lines(), window=3)
    assert printed[0].splitlines() == [
        "NAME   TYPE",
        "name0  file",
        "name1  file",
        "name2  file",
        "name3  file",
        "name4  file",
    ]
