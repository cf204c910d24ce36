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

import pytest

from helpers import Daemon, Mount, fuse_unavailable
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
