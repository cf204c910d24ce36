"""The worker's end of the launcher (packaging/launcher/launcher.c), which runs each datum's
command inside the user's container: the worker listens on a unix socket in the emptyDir both
containers share, the launcher connects, and each `run` sends one command and streams its output
back. The wire format is the one described in launcher.c.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Callable

import msgspec

from pfsfuse.metadata.errors import FailedPrecondition, Unavailable

_HEAD = struct.Struct(">cI")


class Ended(msgspec.Struct, frozen=True):
    status: str  # "exit N", "signal N" or "timeout"
    output: bytes  # stdout and stderr, interleaved as they came

    @property
    def code(self) -> int | None:
        """The exit status, if the command exited."""
        kind, _, n = self.status.partition(" ")
        return int(n) if kind == "exit" else None


class Launcher:
    def __init__(self, path: str):
        self.path = path
        try:
            os.unlink(path)  # left by a worker that died
        except FileNotFoundError:
            pass
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o666)  # the user's container may run as any user
        self._listener.listen(1)
        self._conn: socket.socket | None = None
        self.pid = 0  # the launcher's, in the user container
        # /dev/fuse, mounted at /pfs by the launcher (device-plugin mode): the FUSE session it is
        # given to owns it
        self.fuse_fd: int | None = None
        self.terminating = False  # the launcher got SIGTERM: Kubernetes is stopping the pod

    def wait(self, timeout: float) -> None:
        """Until the launcher has connected."""
        self._listener.settimeout(timeout)
        try:
            self._conn, _ = self._listener.accept()
        except TimeoutError:
            raise Unavailable(
                f"the launcher did not connect to {self.path} within {timeout:g} s: "
                "is the user container running /pfs-bin/launcher?"
            ) from None
        self._conn.settimeout(timeout)
        try:  # the hello carries the FUSE descriptor, if the launcher mounted one
            first, fds, _, _ = socket.recv_fds(self._conn, _HEAD.size, 1)
        except TimeoutError:
            raise Unavailable(f"the launcher connected to {self.path} but said nothing") from None
        self._conn.settimeout(None)
        if fds:
            self.fuse_fd = fds[0]
        if not first:
            raise Unavailable("the launcher is gone (the user container ended)")
        kind, size = _HEAD.unpack(first + self._exactly(_HEAD.size - len(first)))
        data = self._exactly(size)
        if kind != b"H":
            raise FailedPrecondition(f"the launcher said {kind!r} instead of hello")
        self.pid = int(data)

    def run(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str = "",
        uid: int = -1,
        gid: int = -1,
        stdin: bytes = b"",
        timeout: float | None = None,
        output: Callable[[bytes], None] | None = None,
    ) -> Ended:
        """Run a command in the user's container; `output` gets its output as it comes. Raises
        FailedPrecondition when it cannot start (no such command, user or directory)."""
        ms = 0 if timeout is None else max(1, int(timeout * 1000))
        parts = [
            str(uid),
            str(gid),
            cwd,
            str(ms),
            str(len(argv)),
            *argv,
            str(len(env)),
            *(f"{k}={v}" for k, v in env.items()),
        ]
        if any("\0" in p for p in parts):
            raise FailedPrecondition("a command, its arguments and its environment cannot hold NUL bytes")
        self._send(b"R", b"".join(p.encode() + b"\0" for p in parts) + stdin)
        out = bytearray()
        while True:
            kind, data = self._receive()
            if kind in (b"O", b"E"):
                out += data
                if output is not None:
                    output(data)
            elif kind == b"T":
                self.terminating = True  # the command runs on
            elif kind == b"X":
                return Ended(data.decode(), bytes(out))
            elif kind == b"F":
                raise FailedPrecondition(f"cannot run {argv[0]}: {data.decode(errors='replace')}")
            else:
                raise FailedPrecondition(f"the launcher sent an unknown message {kind!r}")

    def fileno(self) -> int:
        """The connection's descriptor: readable between commands when the launcher says the pod
        is terminating, or is gone."""
        return self._connected().fileno()

    def check(self) -> None:
        """Read, without waiting, what the launcher said between commands: that the pod is
        terminating. Raises Unavailable if it is gone."""
        conn = self._connected()
        while select.select([conn], [], [], 0)[0]:
            kind, _ = self._receive()
            if kind != b"T":
                raise FailedPrecondition(f"the launcher sent {kind!r} between commands")
            self.terminating = True

    def close(self) -> None:
        """The launcher sees the socket close, stops what runs and exits (ending the pod)."""
        for s in (self._conn, self._listener):
            if s is not None:
                s.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _connected(self) -> socket.socket:
        if self._conn is None:
            raise FailedPrecondition("the launcher is not connected")
        return self._conn

    def _send(self, kind: bytes, data: bytes) -> None:
        self._connected().sendall(_HEAD.pack(kind, len(data)) + data)

    def _receive(self) -> tuple[bytes, bytes]:
        head = self._exactly(_HEAD.size)
        kind, size = _HEAD.unpack(head)
        return kind, self._exactly(size)

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            piece = self._connected().recv(n - len(buf))
            if not piece:
                raise Unavailable("the launcher is gone (the user container ended)")
            buf += piece
        return bytes(buf)
