"""`pfs mount` and `pfs unmount`: the life of a mount process.

A mount runs in its own process (in the background unless --foreground), a client of the daemon.
It reports readiness only once the kernel's requests are being answered, finishes the commits it
started when it is unmounted or gets SIGTERM/SIGINT, and leaves a pid file so that `pfs unmount`
can wait for that.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio

from pfsfuse.api.connect import connect
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, PfsError, Unavailable
from pfsfuse.mount.fs import Filesystem
from pfsfuse.mount.inodes import KEPT
from pfsfuse.mount.workspace import alive

log = logging.getLogger("pfsfuse.mount")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters


def _state_dir() -> Path:
    d = Home().path / "mounts"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _state(mountpoint: str) -> Path:
    """Where a mount keeps its pid, log and temporary files: named after its mountpoint."""
    tag = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return _state_dir() / tag


def check_mountpoint(mountpoint: str) -> str:
    path = os.path.abspath(mountpoint)
    if not os.path.lexists(path):
        os.makedirs(path)  # as pachctl mount does: a user names where they want the data
    if not os.path.isdir(path):
        raise InvalidArgument(f"{mountpoint} is not a directory")
    if os.path.ismount(path):
        raise FailedPrecondition(f"{mountpoint} is already a mount point")
    if os.listdir(path):
        raise InvalidArgument(f"{mountpoint} is not empty")
    return path


def parse_pinned(specs: list[str]) -> dict[str, str]:
    pinned = {}
    for spec in specs:
        repo, sep, ref = spec.partition(":")
        if not sep or not repo or not ref:
            raise InvalidArgument(f"invalid -c {spec!r}: expected REPO:REF")
        pinned[repo] = ref
    return pinned


def run(
    mountpoint: str,
    repos: list[str],
    pinned: dict[str, str],
    read_only: bool,
    idle: float,
    ready=lambda: None,
    allow_other: bool = False,
) -> None:
    """Mount and serve until unmounted or signalled; `ready` is called once requests are served."""
    path = check_mountpoint(mountpoint)
    client = connect()
    client.version()  # fail now, with one clear line, if the daemon cannot be reached
    for repo in [*repos, *pinned]:
        client.inspect_repo(repo)
    for repo, ref in pinned.items():
        if ref not in {b.name for b in client.list_branch(repo)}:
            client.inspect_commit(repo, ref)  # a commit or ancestry ref must resolve
    state = _state(path)
    tmpdir = tempfile.mkdtemp(prefix=state.name + ".", dir=state.parent)

    def lost(what: str) -> None:
        # Kept until a `pfs unmount` of this mount point reports it (a mount killed before that
        # leaves it for the next one).
        with open(state.with_suffix(".lost"), "a") as f:
            f.write(what.replace("\n", " ") + "\n")

    fs = Filesystem(client, path, tmpdir, repos, pinned, read_only, idle, lost, kept_inodes=_kept_inodes())
    _tune_memory()
    options = set(pyfuse3.default_options) | {"fsname=pfsfuse", "subtype=pfs"}
    if read_only:
        options.add("ro")
    if allow_other:  # other users too, the kernel checking the stored modes and owners
        options |= {"allow_other", "default_permissions"}
    pyfuse3.init(fs, path, options)
    state.with_suffix(".pid").write_text(f"{os.getpid()}\n{path}\n")
    try:
        trio.run(_serve, fs, path, ready)
    finally:
        pyfuse3.close(unmount=True)
        client.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        state.with_suffix(".pid").unlink(missing_ok=True)


def _kept_inodes() -> int:
    """$PFS_MOUNT_INODES: how many files and directories the kernel may keep known before the
    mount asks it to drop the oldest (default 131,072; each costs the mount about 400 bytes)."""
    text = os.environ.get("PFS_MOUNT_INODES", "")
    if not text:
        return KEPT
    if not text.isdigit() or int(text) < 64:
        raise InvalidArgument(f"PFS_MOUNT_INODES={text!r}: expected a whole number of at least 64")
    return int(text)


def _tune_memory() -> None:
    """Allocator settings for a process that holds big caches and churns through chunks."""
    # The caches hold millions of long-lived objects (listings, inodes). With the default
    # threshold of 700, listing a big directory sets off collections that walk all of them:
    # half the CPU of an `ls -l` of 100,000 entries.
    gc.set_threshold(100_000)
    # Chunk buffers (up to 4 MiB, runs of up to 32 MiB) come from the heap and their memory is
    # kept once freed: by default glibc maps and unmaps such buffers, so every chunk read
    # lands in fresh pages, a page fault each 4 KiB (about a tenth of a cold read's CPU).
    # Two arenas: each worker thread's own arena keeps what it freed too, and 16 of them held
    # 400-480 MiB after a listing of 1,000,000 entries (two hold about 160 MiB).
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    libc.mallopt(_M_ARENA_MAX, 2)


async def _serve(fs: Filesystem, path: str, ready) -> None:
    async with trio.open_nursery() as nursery:
        fs.nursery = nursery
        nursery.start_soon(_signals)
        nursery.start_soon(fs.keep_committing)
        async with trio.open_nursery() as fuse:
            fuse.start_soon(pyfuse3.main)
            # Usable once a request through the kernel is answered.
            await trio.to_thread.run_sync(os.stat, path)
            _raise_read_ahead(path)
            ready()
        await fs.finish_all()
        nursery.cancel_scope.cancel()


async def _signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            pyfuse3.terminate()


def _raise_read_ahead(path: str, kib: int = 4096) -> None:
    """Let the kernel read ahead in big requests (1 MiB each); needs root, else nothing."""
    dev = os.stat(path).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        knob.write_text(f"{kib}\n")
    except OSError:
        pass


def mount_background(mountpoint: str, args: list[str], timeout: float = 60.0) -> None:
    """Start a mount process and return once it serves, or raise with its error."""
    check_mountpoint(mountpoint)
    read, write = os.pipe()
    log_path = _state(os.path.abspath(mountpoint)).with_suffix(".log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pfsfuse.mount.main", "--ready-fd", str(write), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=[write],
            start_new_session=True,
        )
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = _read_with_deadline(pipe, proc, timeout)
    if message != "ok":
        if proc.poll() is None:
            proc.kill()
        raise Unavailable(message or f"the mount process exited with status {proc.wait()}; see {log_path}")


def _read_with_deadline(pipe, proc: subprocess.Popen, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return f"the mount did not become ready within {timeout:.0f} s"
        if select.select([pipe], [], [], min(left, 0.5))[0]:
            piece = os.read(pipe.fileno(), 4096)
            if not piece:
                break
            buf += piece
        elif proc.poll() is not None:
            break
    return buf.decode(errors="replace").strip()


def _mounts() -> dict[str, int]:
    """Mount points of pfsfuse file systems, with the uid of the user who mounted each, from
    /proc/self/mounts."""
    out = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            source, target, fstype, options, *_ = line.split()
            if fstype == "fuse.pfs" or source == "pfsfuse":
                uid = next((o[8:] for o in options.split(",") if o.startswith("user_id=")), "0")
                out[target.replace("\\040", " ")] = int(uid)
    return out


@dataclass
class Unmounted:
    mountpoint: str
    note: str | None = None  # why the mount process goes on for now (files still open in it)
    lost: list[str] = field(default_factory=list)  # changes that were not saved, one a line


def unmount(mountpoint: str, timeout: float = 120.0, busy_wait: float = 3.0) -> Unmounted:
    """Unmount, then wait for the mount process to finish its commits. A mount with files still
    open in it is detached: the process goes on until they are closed, and the note says so.
    Changes the mount could not save are reported, once."""
    path = os.path.abspath(mountpoint)
    if path not in _mounts():
        raise InvalidArgument(f"{mountpoint} is not a pfs mount")
    state = _state(path)
    pidfile = state.with_suffix(".pid")
    r = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
    busy = False
    if r.returncode != 0:
        # A busy mount or a dead process: detach it lazily (root only).
        lazy = subprocess.run(["umount", "-l", path], capture_output=True, text=True)
        if lazy.returncode != 0:
            raise FailedPrecondition(f"cannot unmount {mountpoint}: {r.stderr.strip() or lazy.stderr.strip()}")
        busy = "busy" in r.stderr
    done = Unmounted(mountpoint)
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    deadline = time.monotonic() + (busy_wait if busy else timeout)
    while pid is not None and alive(pid):
        if time.monotonic() > deadline:
            if busy:
                done.note = (
                    f"{mountpoint} is detached, but files are still open in it: its commits are "
                    "finished once they are closed"
                )
                break
            raise Unavailable(f"the mount process {pid} did not exit within {timeout:.0f} s")
        time.sleep(0.05)
    else:
        pidfile.unlink(missing_ok=True)
    lost = state.with_suffix(".lost")
    try:
        done.lost = lost.read_text().splitlines()
        lost.unlink()
    except FileNotFoundError:
        pass
    return done


def unmount_all() -> list[Unmounted]:
    """Unmount every mount of this store (this PFS_HOME) that the caller made, or every one of
    them for root; other users' and other stores' mounts are left alone."""
    mounted = _mounts()
    ours = []
    for pidfile in sorted(_state_dir().glob("*.pid")):
        try:
            path = pidfile.read_text().splitlines()[1]
        except (OSError, IndexError):
            continue
        if path in mounted and (os.geteuid() == 0 or mounted[path] == os.geteuid()):
            ours.append(path)
    return [unmount(path) for path in ours]


def main() -> None:
    """The mount process (`python -m pfsfuse.mount.main`), started by `pfs mount`."""
    p = argparse.ArgumentParser(prog="pfs mount")
    p.add_argument("mountpoint")
    p.add_argument("--repos", default="")
    p.add_argument("-c", "--commit", action="append", default=[])
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--allow-other", action="store_true")
    p.add_argument("--ready-fd", type=int)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    pipe = os.fdopen(a.ready_fd, "w") if a.ready_fd is not None else None

    def ready() -> None:
        if pipe is not None:
            pipe.write("ok\n")
            pipe.close()

    try:
        repos = [r for r in a.repos.split(",") if r]
        run(a.mountpoint, repos, parse_pinned(a.commit), a.read_only, a.idle, ready, a.allow_other)
    except (PfsError, RuntimeError, OSError) as e:
        if isinstance(e, OSError) and e.errno == errno.EPERM:
            e = FailedPrecondition(f"cannot mount {a.mountpoint}: permission denied (is /dev/fuse usable?)")
        if pipe is not None and not pipe.closed:
            pipe.write(f"{e}\n")
            pipe.close()
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
