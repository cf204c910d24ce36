"""A full disk under PFS_HOME (a small tmpfs): writes fail with one "no space left on device" line
(the CLI) or a 507 (the client API), leave nothing half-written, and work again once space is
freed, without restarting the daemon."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import Daemon, Mount, fuse_unavailable, wait_for
from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import NoSpace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk():
    where = Path(tempfile.mkdtemp(prefix="pfs-full-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def test_writes_fail_cleanly_and_recover(small_disk):
    d = Daemon(small_disk / "home")
    try:
        d.start()
        d.pfs("create-repo", "r")
        d.pfs("put-file", "r", "master", "before", input=b"kept")
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)

        r = d.pfs("put-file", "r", "master", "big", input=os.urandom(4 << 20), check=False)
        err = r.stderr.decode().strip()
        assert r.returncode != 0 and "no space left on device" in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        client = d.client()
        try:
            with pytest.raises(NoSpace):  # HTTP 507 through the client API
                client.write_files("r", "master", [Put("big", stream=io.BytesIO(os.urandom(1 << 20)))])
        finally:
            client.close()
        assert d.pfs("get-file", "r", "master", "before").stdout == b"kept"  # reads go on
        assert len(d.pfs("list-commit", "r").stdout.decode().strip().splitlines()) == 2  # no commit was made

        filler.unlink()
        d.pfs("put-file", "r", "master", "big", input=os.urandom(4 << 20))
        files = d.pfs("list-file", "r", "master").stdout.decode()
        assert "big" in files and "before" in files
        assert "no problems found" in d.pfs("fsck").stdout.decode()
    finally:
        d.stop()
        d.kill()


@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_the_mount_says_enospc_and_recovers(small_disk, tmp_home):
    d = Daemon(small_disk / "home")
    where = tmp_home / "mnt"
    where.mkdir()
    try:
        d.start()
        d.pfs("create-repo", "r")
        d.pfs("put-file", "r", "master", "before", input=b"kept")
        with Mount(d, where):
            filler = small_disk / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
            # The mount writes back: the daemon's refusal comes at fsync(2) (or a later close).
            with pytest.raises(OSError) as e:
                with open(where / "r" / "master" / "big", "wb") as f:
                    f.write(os.urandom(4 << 20))
                    f.flush()
                    os.fsync(f.fileno())
            assert e.value.errno == errno.ENOSPC
            assert (where / "r" / "master" / "before").read_bytes() == b"kept"
            filler.unlink()
            with open(where / "r" / "master" / "big", "wb") as f:
                f.write(b"fits now")
                f.flush()
                os.fsync(f.fileno())
            assert d.pfs("get-file", "r", "master", "big").stdout == b"fits now"
    finally:
        d.stop()
        d.kill()


@pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))
def test_a_file_closed_without_fsync_on_a_full_store_is_saved_later_or_reported(small_disk, tmp_home):
    """The store's disk is full, the mount's is not: write(2) and close(2) succeed (the mount
    writes back, as a disk's page cache does), the file reads back meanwhile, and it is saved once
    space is freed. If it cannot be saved by unmount, `pfs unmount` says which file and fails."""
    d = Daemon(small_disk / "home")
    laptop = SimpleNamespace(  # the mount's own PFS_HOME, on a disk with room
        home=tmp_home / "laptop",
        env={**d.env, "PFS_HOME": str(tmp_home / "laptop"), "PFS_ADDRESS": f"unix:{small_disk}/home/pfs.sock"},
    )
    where = tmp_home / "mnt"
    where.mkdir()
    filler = small_disk / "filler"
    body = os.urandom(1 << 20)
    try:
        d.start()
        d.pfs("create-repo", "r")
        d.pfs("put-file", "r", "master", "before", input=b"kept")
        with Mount(laptop, where) as m:
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
            (where / "r" / "master" / "later").write_bytes(body)  # no fsync
            assert (where / "r" / "master" / "later").read_bytes() == body
            [log] = (tmp_home / "laptop" / "mounts").glob("*.log")
            wait_for(lambda: "no space left on device" in log.read_text(), 30, what="the daemon's refusal")
            assert d.pfs("get-file", "r", "master", "later", check=False).returncode != 0
            filler.unlink()
            wait_for(
                lambda: d.pfs("get-file", "r", "master", "later", check=False).stdout == body,
                60,
                what="the file to be saved once space was freed",
            )

            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
            never = os.urandom(1 << 20)  # not deduplicated
            (where / "r" / "master" / "never").write_bytes(never)
            r = m.unmount(check=False)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode != 0 and "no space left on device" in out, out
        [line] = [x for x in out.splitlines() if "r@master:/never" in x]
        assert "later" not in out, out
        kept = Path(line.split("its content is kept in ")[1])  # nothing lost silently: rescued
        assert kept.read_bytes() == never
    finally:
        d.stop()
        d.kill()
