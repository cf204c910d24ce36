"""The copy fuse mode's emptyDir, as the worker sidecar lays it out and guards it
(`pfsfuse.scheduler.kube.podworker`): the end-to-end runs are in test_runc_pods.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pfsfuse.scheduler.kube import podworker


def test_a_restarted_sidecar_clears_the_emptydir_but_keeps_the_users_pfs(tmp_path: Path):
    share = tmp_path / "pfs"
    share.mkdir()
    views = podworker.lay_out(share)
    assert views == share / "datum" and os.listdir(views) == ["out"]
    assert (views / "out").stat().st_mode & 0o777 == 0o777
    inode = views.stat().st_ino
    (views / "images").mkdir()
    (views / "images" / "a").write_bytes(b"x")
    (views / "out" / "left").write_bytes(b"y")
    (share / "done" / "1").mkdir(parents=True)
    (share / "pipes").mkdir()
    # The user container's /pfs is bound to `datum`: a new directory there would not be its.
    assert podworker.lay_out(share) == views and views.stat().st_ino == inode
    assert sorted(os.listdir(share)) == ["datum"] and os.listdir(views) == ["out"]
    assert not os.listdir(views / "out")


def test_an_out_swapped_for_a_symlink_is_replaced(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    assert not podworker.replace_out(out)
    out.rmdir()
    out.symlink_to("/proc/self")
    assert podworker.replace_out(out)
    assert out.is_dir() and not out.is_symlink() and not os.listdir(out)
    out.rmdir()
    assert podworker.replace_out(out) and out.is_dir()  # removed: a fresh one too


def test_an_output_file_is_read_only_under_its_output(tmp_path: Path):
    done = tmp_path / "done"
    (done / "d").mkdir(parents=True)
    (done / "d" / "f").write_bytes(b"data")
    assert podworker.OpenedLater(str(done / "d" / "f"), str(done)).read() == b"data"
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "f").write_bytes(b"credentials")
    (done / "d" / "link").symlink_to(secret / "f")
    with pytest.raises(OSError):  # the last component is not followed
        podworker.OpenedLater(str(done / "d" / "link"), str(done)).read()
    # A directory on the path swapped for a symlink out of the output (by a lingering process).
    for name in ("f", "link"):
        (done / "d" / name).unlink()
    (done / "d").rmdir()
    (done / "d").symlink_to(secret)
    with pytest.raises(OSError, match="replaced"):
        podworker.OpenedLater(str(done / "d" / "f"), str(done)).read()


def test_a_fifo_left_in_the_output_is_refused_not_waited_on(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        podworker.OpenedLater(str(tmp_path / "fifo"), str(tmp_path)).read()
