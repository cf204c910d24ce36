"""fallocate(2) in a branch, in the modes FUSE passes on, for a file kept in memory and one spilled
to disk: reserving space (growing the file, or not), punching a hole and zeroing a range read
back as on a disk, and are what the commit keeps. Modes FUSE does not pass on are refused."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from helpers import fuse_unavailable
from pfsfuse.mount.localfile import SPILL

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))]


def _fallocate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["fallocate", *args], capture_output=True, text=True)


@pytest.mark.parametrize("size", [4096, SPILL + 4096], ids=["in-memory", "spilled"])
def test_fallocate_modes_read_back_as_on_a_disk(daemon, mounts, tmp_home, size):
    m = mounts()
    branch = m.path / "r" / "master"
    branch.mkdir(parents=True)  # a repo and its branch
    disk = tmp_home / "disk"
    disk.mkdir()
    for top in (branch, disk):
        f = top / "f"
        f.write_bytes(b"a" * size)
        fd = os.open(top / "grown", os.O_CREAT | os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, size)  # mode 0: the file grows, zeroed
        finally:
            os.close(fd)
        for args in (
            ["-n", "-o", "0", "-l", str(2 * size)],  # keep size: nothing shows
            ["-p", "-o", "100", "-l", "50"],  # punch a hole (keeps the size)
            ["-z", "-o", str(size - 10), "-l", "30"],  # zero a range past the end: grows the file
            ["-z", "-n", "-o", "7", "-l", "3"],  # zero a range, keep size
        ):
            r = _fallocate(*args, str(f))
            assert r.returncode == 0, (args, r.stderr)
    for name in ("f", "grown"):
        assert (branch / name).read_bytes() == (disk / name).read_bytes(), name
    expected = {name: (disk / name).read_bytes() for name in ("f", "grown")}

    r = _fallocate("--insert-range", "-o", "0", "-l", "4096", str(branch / "f"))
    assert r.returncode != 0 and os.strerror(errno.EOPNOTSUPP) in r.stderr
    fd = os.open(branch / "ro", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    fd = os.open(branch / "ro", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.posix_fallocate(fd, 0, 10)
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)

    m.unmount()  # the commit is finished: it keeps what was read
    for name, want in expected.items():
        assert daemon.pfs("get-file", f"r@master:/{name}").stdout == want
