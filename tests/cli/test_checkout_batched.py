"""get-file -r through batched read plans writes what a file-by-file copy writes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pfsfuse.api import checkout as checkout_mod
from pfsfuse.api.client import Client
from pfsfuse.api.remote import RemoteClient
from pfsfuse.api.types import Put, Symlink


def _file_by_file(client: Client, repo: str, ref: str, root: str, dest: Path) -> None:
    """How get-file -r wrote a tree before batched plans: a walk, then one get-file a file."""
    for f in client.walk_file(repo, ref, root):
        target = dest / os.path.relpath(f.path, root) if f.path != root else dest
        if f.type == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif f.type == "symlink":
            os.symlink(f.target, target)
        else:
            target.write_bytes(b"".join(client.get_file(repo, ref, f.path)))
            if f.executable:
                os.chmod(target, 0o755)


def _tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("symlink", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), bool(p.stat().st_mode & 0o100))
    return out


@pytest.fixture
def tree_repo(daemon):
    """A repo whose 'data' has nested and empty directories, empty and executable files,
    symlinks, a file of several chunks and a split file with a header and footer."""
    client = daemon.client()
    rnd = random.Random(7)
    client.create_repo("r")
    ops = [Put(f"data/d{i % 3}/sub{i % 2}/f{i:03}", stream=_stream(rnd.randbytes(i * 37))) for i in range(40)]
    ops += [
        Put("data/empty-file", stream=_stream(b"")),
        Put("data/run.sh", stream=_stream(b"#!/bin/sh\n"), executable=True),
        Put("data/big", stream=_stream(rnd.randbytes(5 << 20))),
        Put("data/users", stream=_stream(b"".join(b"row %d\n" % i for i in range(50))), split="line", target_datums=7),
        Put("data/users", stream=_stream(b"id\n"), frame="header"),
        Put("data/users", stream=_stream(b"end\n"), frame="footer"),
        Symlink("data/link", "d0/sub0/f000"),
        Symlink("data/d1/dangling", "../nowhere"),
    ]
    client.write_files("r", "master", ops)
    client.write_files("r", "master", [Put("data/zz/later", stream=_stream(b"second commit"))])
    try:
        yield client
    finally:
        client.close()


def _stream(data: bytes):
    import io

    return io.BytesIO(data)


@pytest.mark.parametrize("direct", [True, False], ids=["chunks-direct", "through-daemon"])
def test_batched_checkout_equals_file_by_file(tree_repo, daemon, tmp_path, monkeypatch, direct):
    client = tree_repo if direct else RemoteClient(tree_repo.address)  # no PFS_HOME: no direct reads
    assert (client.chunk_store is not None) == direct
    info = client.inspect_commit("r", "master~1")
    assert client.inspect_file("r", "master", "data/big").size == 5 << 20
    assert len(client.read_plans("r", "master", "data/big")[0].chunks) > 1  # several chunks
    monkeypatch.setattr(checkout_mod, "PLANS_PAGE", 7)  # many pages, resumed inside subdirectories
    cases = [(info.id, "data"), ("master", "data"), ("master", ""), ("master", "data/d1")]
    for i, (ref, root) in enumerate(cases):
        batched, reference = tmp_path / f"batched{i}", tmp_path / f"reference{i}"
        written = checkout_mod.checkout(client, "r", ref, root, str(batched))
        _file_by_file(client, "r", ref, root, reference)
        want = _tree(reference)
        assert want and _tree(batched) == want, (ref, root)
        assert len(written) == sum(1 for v in want.values() if v[0] == "file")
        if root == "data":
            assert want["empty-file"] == ("file", b"", False) and "d1/dangling" in want
    # the old commit's tree, not the head's
    assert "zz/later" in _tree(tmp_path / "batched1") and "zz" not in _tree(tmp_path / "batched0")
    if not direct:
        client.close()


def test_get_file_recursive_cli(tree_repo, daemon, tmp_path):
    out = tmp_path / "out"
    daemon.pfs("get-file", "r", "master", "data", "-r", "-o", str(out))
    reference = tmp_path / "ref"
    _file_by_file(tree_repo, "r", "master", "data", reference)
    got = _tree(out)
    assert got == _tree(reference)
    assert got["empty-file"] == ("file", b"", False) and got["run.sh"][2] is True
    assert got["link"] == ("symlink", "d0/sub0/f000")
    assert got["users/0000000000000000"][1].startswith(b"id\nrow 0\n") and got["users/0000000000000000"][1].endswith(
        b"end\n"
    )
    assert len(got["big"][1]) == 5 << 20


def test_read_plans_refuses_a_start_outside_the_path(tree_repo):
    from pfsfuse.metadata.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="is not under"):
        tree_repo.read_plans("r", "master", "data/d1", start_after="data/d0/x")


def test_pages_end_early_for_files_of_many_chunks(tmp_path, monkeypatch):
    """In-process: a page stops adding files past PLANS_CHUNKS chunks, and the checkout still
    gets everything (it stops at an empty page, not a short one)."""
    from pfsfuse.engine import reads
    from pfsfuse.home import Home
    from pfsfuse.store import Store

    store = Store(Home(tmp_path / "home"))
    try:
        store.create_repo("r")
        rnd = random.Random(3)
        sizes = [0, 10, 3 << 20, 5, 4 << 20, 1]
        store.write_files(
            "r", "master", [Put(f"d/f{i}", stream=_stream(rnd.randbytes(n))) for i, n in enumerate(sizes)]
        )
        monkeypatch.setattr(reads, "PLANS_CHUNKS", 2)
        pages = list(checkout_mod.plan_pages(store, "r", "master", "d"))
        assert len(pages) > 2 and all(len(p) < 7 for p in pages)
        assert [p.info.path for page in pages for p in page] == ["d"] + [f"d/f{i}" for i in range(len(sizes))]
        checkout_mod.checkout(store, "r", "master", "d", str(tmp_path / "out"))
        reference = tmp_path / "ref"
        _file_by_file(store, "r", "master", "d", reference)
        assert _tree(tmp_path / "out") == _tree(reference)
    finally:
        store.close()
