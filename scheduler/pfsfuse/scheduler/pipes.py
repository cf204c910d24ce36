"""Named pipes (`lazy: true` inputs) whose data is fetched only when a reader opens them.

A reader's open of a FIFO blocks until a writer opens it, and no notification exists before it
completes. So each pipe is held open read-write by us: a reader's open then completes at once,
inotify reports it (IN_OPEN), and only then is the file fetched and streamed into the pipe. When
all is written we close our end (the reader sees the end of the file), wait for the reader to
close (IN_CLOSE_NOWRITE), and open the pipe again for the next reader. We open each pipe through
a hard link in a directory nobody watches, so that inotify never reports our own opens (it merges
an event into an identical one queued before it: counting ours could hide a reader's). One
thread serves every
pipe with poll(). Open files are limited per process, so pipes beyond a shard's worth are served
by forked processes, a shard each: their number is not limited.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import mmap
import os
import resource
import select
import shutil
import signal
import threading
from collections.abc import Callable, Iterator

from inotify_simple import INotify, flags

log = logging.getLogger("pfsfuse.worker")

_IDLE, _FEEDING, _DRAINED = "idle", "feeding", "drained"
SHARD = 8000  # pipes one process holds open (the open-files limit may be as low as 20,000)

Fetch = Callable[[object], Iterator[bytes]]  # what a pipe streams, from its source


class _Pipe:
    def __init__(self, path: str, own: str, source: object):
        self.path = path
        self.own = own  # a hard link to it that we open: not watched
        self.source = source
        self.fd = -1
        self.state = _IDLE
        self.data: Iterator[bytes] | None = None
        self.buf = memoryview(b"")

    def open(self) -> None:
        self.fd = os.open(self.own, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.state = _IDLE

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PipeFeeder:
    def __init__(self, fetch_factory: Callable[[], Fetch], own_dir: str):
        """`fetch_factory()` makes, in each process serving pipes, the function that streams a
        pipe's source. `own_dir`, on the pipes' file system and not watched by anyone, holds the
        links we open them by."""
        self._factory = fetch_factory
        self._own_dir = own_dir
        self._pipes: dict[str, _Pipe] = {}
        self._thread: threading.Thread | None = None
        self._children: list[int] = []
        self._stop_r = self._stop_w = -1
        self._fed: list[int] | memoryview = [0]  # bytes each server streamed: memory shared with the forked ones

    def add(self, path: str, source: object, own: str | None = None) -> None:
        """A named pipe at `path` streaming `fetch(source)` to each reader that opens it. Given
        `own`, another name of an existing pipe in a directory nobody watches, we open it by
        that; else the pipe is made, and linked from the directory of our own links."""
        if own is None:
            os.mkfifo(path, 0o644)  # ours to hold open read-write without privilege
            if not self._pipes:
                os.makedirs(self._own_dir, exist_ok=True)
            own = os.path.join(self._own_dir, str(len(self._pipes)))
            os.link(path, own)
        self._pipes[path] = _Pipe(path, own, source)

    def start(self) -> None:
        if not self._pipes:
            return
        """Returns once every pipe is watched and held open: a reader may come at once."""
        self._stop_r, self._stop_w = os.pipe()
        ready_r, ready_w = os.pipe()
        pipes = list(self._pipes.values())
        shards = [pipes[i : i + SHARD] for i in range(0, len(pipes), SHARD)]
        self._fed = memoryview(mmap.mmap(-1, 8 * len(shards))).cast("q")
        if len(shards) == 1:
            server = _Server(shards[0], self._factory(), self._stop_r, self._fed, 0)
            answer = functools.partial(os.write, ready_w)
            self._thread = threading.Thread(target=server.serve, args=(answer,), name="pfs-pipes", daemon=True)
            self._thread.start()
        else:
            for i, shard in enumerate(shards):
                pid = os.fork()
                if pid == 0:  # a process holding this shard's pipes
                    code = 1
                    try:
                        _die_with_parent()
                        server = _Server(shard, self._factory(), self._stop_r, self._fed, i)
                        server.serve(functools.partial(_answer_once, ready_w))
                        code = 0
                    finally:
                        os._exit(code)
                self._children.append(pid)
            os.close(ready_w)  # the children's copies close as they answer or die: then EOF
        with os.fdopen(ready_r, "rb") as ready:
            answers = ready.read(len(shards))  # a byte from each server: ok, or failed
        if len(shards) == 1:
            os.close(ready_w)
        if answers != b"r" * len(shards):
            raise OSError(errno.EIO, "the named pipes of a lazy input could not be set up")

    @property
    def fed(self) -> int:
        """Bytes streamed into the pipes so far (complete once stopped)."""
        return sum(self._fed)

    def stop(self) -> None:
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")  # never read: every server sees it and returns
            if self._thread is not None:
                self._thread.join()
            for pid in self._children:
                os.waitpid(pid, 0)
            os.close(self._stop_r)
            os.close(self._stop_w)
            self._stop_r = self._stop_w = -1
        if self._pipes:
            shutil.rmtree(self._own_dir, ignore_errors=True)


class _Server:
    """Serves a shard of pipes in one thread."""

    def __init__(self, pipes: list[_Pipe], fetch: Fetch, stop_fd: int, fed, slot: int):
        self.pipes = {p.path: p for p in pipes}
        self.fetch = fetch
        self.stop_fd = stop_fd
        self.fed, self.slot = fed, slot  # fed[slot]: the bytes this server streamed

    def serve(self, answer: Callable[[bytes], object]) -> None:
        """Watch and hold open every pipe, answer b"r" (or b"x" if that failed), then feed the
        readers that come until stopped."""
        inotify = INotify()
        ready = b"x"
        try:
            _raise_open_files(len(self.pipes) + 256)
            dirs = {}
            for d in {os.path.dirname(p) for p in self.pipes}:
                dirs[inotify.add_watch(d, flags.OPEN | flags.CLOSE_NOWRITE)] = d
            for p in self.pipes.values():
                p.open()
            ready = b"r"
        finally:
            answer(ready)
        poller = select.poll()
        poller.register(inotify.fileno(), select.POLLIN)
        poller.register(self.stop_fd, select.POLLIN)
        writing: dict[int, _Pipe] = {}
        try:
            while True:
                for fd, _ in poller.poll():
                    if fd == self.stop_fd:
                        return
                    if fd == inotify.fileno():
                        for event in inotify.read(timeout=0):
                            watched = self.pipes.get(os.path.join(dirs.get(event.wd, ""), event.name))
                            if watched is not None:
                                self._event(watched, event.mask, poller, writing)
                    elif fd in writing:
                        self._write(writing[fd], poller, writing)
        finally:
            for p in self.pipes.values():
                p.close()
            inotify.close()

    def _event(self, p: _Pipe, mask: int, poller, writing) -> None:
        if mask & flags.OPEN:
            if p.state == _IDLE:
                p.state, p.data = _FEEDING, self.fetch(p.source)
                writing[p.fd] = p
                poller.register(p.fd, select.POLLOUT)
        elif mask & flags.CLOSE_NOWRITE and p.state != _IDLE:
            # The reader is gone (done, or early): be ready for the next one.
            if p.state == _FEEDING:
                self._unwatch(p, poller, writing)
                p.close()
            p.data, p.buf = None, memoryview(b"")
            p.open()

    def _write(self, p: _Pipe, poller, writing) -> None:
        try:
            while True:
                if not p.buf:
                    assert p.data is not None  # a pipe being fed has its data
                    piece = next(p.data, None)
                    if piece is None:  # all written: closing our end gives the reader its EOF
                        self._unwatch(p, poller, writing)
                        p.close()
                        p.state = _DRAINED
                        return
                    p.buf = memoryview(piece)
                    self.fed[self.slot] += len(piece)
                p.buf = p.buf[os.write(p.fd, p.buf) :]
        except BlockingIOError:
            return  # the pipe is full: poll says when the reader made room
        except Exception as e:  # noqa: BLE001 - a failed fetch ends that pipe, not the others
            log.error("cannot stream %s: %s", p.path, e)
            self._unwatch(p, poller, writing)
            p.close()
            p.state = _DRAINED

    @staticmethod
    def _unwatch(p: _Pipe, poller, writing) -> None:
        if writing.pop(p.fd, None) is not None:
            poller.unregister(p.fd)


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def _answer_once(fd: int, answer: bytes) -> None:
    """A forked server's answer: written, then its end of the pipe closed."""
    os.write(fd, answer)
    os.close(fd)


def _die_with_parent() -> None:
    """A pipe server forked by a worker ends with it (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)
