"""LocalStore specifics: atomic puts, temporary files, error classification, URLs."""

import errno
import mmap
import os
import subprocess
import sys

import pytest

from pfsfuse.chunks import LocalStore, local, open_store


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_layout(tmp_path):
    store = LocalStore(tmp_path)
    store.put("packs/ab/cd", b"x")
    assert (tmp_path / "packs" / "ab" / "cd").read_bytes() == b"x"
    assert files_under(tmp_path) == ["packs/ab/cd"]


@pytest.mark.parametrize("size", [100, 64 << 10, (1 << 20) + 123])
@pytest.mark.parametrize("aligned", [True, False])
def test_put_large_objects_aligned_or_not(tmp_path, size, aligned):
    # A page-aligned buffer goes to the disk with O_DIRECT, its unaligned tail through the page
    # cache; an unaligned one all through the page cache. Both store exactly the bytes.
    data = os.urandom(size)
    if aligned:
        buf = mmap.mmap(-1, size + 4096)
        buf[:size] = data
        view = memoryview(buf)[:size]
    else:
        view = memoryview(bytearray(b"x" + data))[1:]
    store = LocalStore(tmp_path)
    store.put("obj", view, durable=False)
    store.sync(["obj"])
    assert store.get("obj") == data
    assert store.get("obj", size - 10) == data[-10:]


def test_failed_put_leaves_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put("keep", b"old")

    def write_half_then_fail(fd, data):
        os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "_write_all", write_half_then_fail)
    with pytest.raises(OSError) as excinfo:
        store.put("new/obj", b"x" * 1000)
    assert excinfo.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        store.put("keep", b"new value")
    assert files_under(tmp_path) == ["keep"]
    assert sorted(store.list()) == ["keep"]
    assert store.get("keep") == b"old"


def test_crashed_put_is_invisible(tmp_path):
    # A crash between creating the temporary file and the rename leaves it behind.
    store = LocalStore(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".b.0123456789abcdef.tmp").write_bytes(b"partial")
    assert list(store.list()) == []
    assert not store.exists("a/b")


def test_temp_failures(tmp_path):
    store = LocalStore(tmp_path)
    assert store.is_temp_failure(OSError(errno.EINTR, "interrupted"))
    assert store.is_temp_failure(BlockingIOError(errno.EAGAIN, "try again"))
    assert not store.is_temp_failure(OSError(errno.ENOSPC, "full"))
    assert not store.is_temp_failure(OSError(errno.EIO, "I/O error"))
    assert not store.is_temp_failure(ValueError("x"))


def test_temp_failure_retried(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.retry_delay = 0.001
    real_write_all = local._write_all
    calls = []

    def flaky(fd, data):
        calls.append(1)
        if len(calls) == 1:
            raise InterruptedError(errno.EINTR, "interrupted")
        real_write_all(fd, data)

    monkeypatch.setattr(local, "_write_all", flaky)
    store.put("k", b"data")
    assert len(calls) == 2
    assert store.get("k") == b"data"
    assert files_under(tmp_path) == ["k"]


def test_open_store(tmp_path):
    store = open_store(f"file://{tmp_path}/sub%20dir")
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path / "sub dir")
    assert store.url == f"file://{tmp_path}/sub%20dir"
    store.put("k", b"v")
    assert open_store(store.url).get("k") == b"v"
    assert isinstance(open_store(f"file://localhost{tmp_path}"), LocalStore)


def test_open_store_imports_only_the_backend_of_its_scheme(tmp_path):
    """A local store does not pay for the cloud SDKs: the registry imports backends by name."""
    script = (
        "import sys; from pfsfuse.chunks import open_store; "
        f"open_store('file://{tmp_path}').put('k', b'v'); "
        "print(sorted(m for m in sys.modules if m.startswith(('boto3', 'google.cloud', "
        "'azure', 'pfsfuse.chunks.s3', 'pfsfuse.chunks.gcs', 'pfsfuse.chunks.azure'))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "k").read_bytes() == b"v"


@pytest.mark.parametrize(
    "url", ["file:relative/dir", "file://host/dir", "/plain/path", "ftp://host/dir", "s3:relative"]
)
def test_open_store_rejects(url):
    with pytest.raises(ValueError, match="unsupported storage URL"):
        open_store(url)


def test_views_read_the_bytes_at_any_offset(tmp_path):
    # Mapped from a page boundary before the offset: the view starts at the offset and ends at
    # the range's end or the object's, whichever comes first.
    store = LocalStore(tmp_path)
    data = os.urandom((3 << 20) + 4321)
    store.put("obj", data)
    for offset, length in [(0, len(data)), (4097, 1 << 20), (len(data) - (300 << 10), 1 << 30)]:
        view = store.view("obj", offset, length)
        assert isinstance(view, memoryview)
        assert view == data[offset : offset + length]
