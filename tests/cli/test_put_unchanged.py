"""put-file -r again: files the branch holds with the same size, mode, owners and times are not
read (as git and rsync decide); changed, new and re-moded ones are; --checksum reads them all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pfsfuse.api.types import SetStat
from pfsfuse.metadata.records import Stat


def _tree(top: Path) -> Path:
    (top / "d" / "e").mkdir(parents=True)
    for rel in ("a", "d/b", "d/e/c"):
        (top / rel).write_bytes(b"old " + rel.encode())
    os.symlink("a", top / "link")
    return top


def _forge(daemon, path: str, local: Path) -> None:
    """Give the branch's `path` the stat of `local` without changing its content: it then looks
    unchanged to put-file, whatever `local` now holds, and only a read would see otherwise."""
    st = os.stat(local)
    stat = Stat(st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns)
    client = daemon.client()
    try:
        client.write_files("r", "master", [SetStat(path, stat)])
    finally:
        client.close()


def _get(pfs, path: str) -> str:
    return pfs("get-file", "r", "master", path).output


def test_put_file_r_skips_files_whose_size_and_times_match(pfs, daemon, tmp_path):
    src = _tree(tmp_path / "src")
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    # Same size, new bytes: what a changed file looks like when its stat is forged to match.
    (src / "d" / "b").write_bytes(b"new d/b")
    _forge(daemon, "t/d/b", src / "d" / "b")
    (src / "d" / "e" / "c").write_bytes(b"changed, longer")  # a new size: read
    (src / "new").write_bytes(b"new file")
    os.chmod(src / "a", 0o700)  # a new mode: read again, and the mode kept
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    assert _get(pfs, "t/d/b") == "old d/b"  # skipped: its content was never read
    assert _get(pfs, "t/d/e/c") == "changed, longer"
    assert _get(pfs, "t/new") == "new file"
    a = daemon.client()
    try:
        assert a.inspect_file("r", "master", "t/a").mode == 0o700
        assert a.inspect_file("r", "master", "t/link").target == "a"
        # the directories keep the times of the disk, though files were written into them
        for rel in ("d", "d/e"):
            assert a.inspect_file("r", "master", f"t/{rel}").mtime == os.stat(src / rel).st_mtime_ns
    finally:
        a.close()
    # --checksum reads every file, and so does -a (which would append to them)
    pfs("put-file", "r", "master", "t", "-r", "--checksum", "-f", str(src))
    assert _get(pfs, "t/d/b") == "new d/b"


def test_put_file_r_again_of_an_unchanged_tree_changes_nothing(pfs, daemon, tmp_path):
    src = _tree(tmp_path / "src")
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    first = pfs("inspect-commit", "r", "master", "--json").output
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    second = pfs("inspect-commit", "r", "master", "--json").output
    one, two = json.loads(first), json.loads(second)
    assert two["id"] != one["id"]  # a commit still, as pachctl makes one for every put-file
    assert two["tree"] == one["tree"]
    # -a never skips: it appends the unchanged local file again
    pfs("put-file", "r", "master", "t/d/e", "-r", "-a", "-f", str(src / "d" / "e"))
    assert _get(pfs, "t/d/e/c") == "old d/e/cold d/e/c"


def test_walk_file_in_pages_equals_the_whole_walk(pfs, daemon, tmp_path):
    src = _tree(tmp_path / "src")
    pfs("create-repo", "r")
    pfs("put-file", "r", "master", "t", "-r", "-f", str(src))
    client = daemon.client()
    try:
        for root in ("", "t", "t/d"):
            whole = client.walk_file("r", "master", root)
            pages, after = [], None
            while page := client.walk_file("r", "master", root, after, 2):
                assert len(page) <= 2
                pages.extend(page)
                after = page[-1].path
            assert pages == whole and len(whole) > 2
        assert client.walk_file("r", "master", "t/a", None, 5) == [client.inspect_file("r", "master", "t/a")]
    finally:
        client.close()
