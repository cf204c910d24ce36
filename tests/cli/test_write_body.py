"""How a write's request goes on the wire: a mount's flush (small ops, their bytes in memory) in
one piece with its length, which the daemon reads in one; a put from a stream that comes slowly
(a pipe) piece by piece as it comes, so that the daemon is not left waiting for the whole."""

from __future__ import annotations

import io
import os
import socket
import threading
from pathlib import Path

from pfsfuse.api.remote import RemoteClient
from pfsfuse.api.types import Delete, Put

ANSWER = b'{"commit":"c"}'


class _Daemon:
    """A stand-in for the daemon on a unix socket: records each request's head and body, and
    sets `first_piece` when the first piece of a chunked body has arrived."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.first_piece = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            f = conn.makefile("rb")
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = f.readline()
                    if not line:
                        return
                    head += line
                self.heads.append(head.lower())
                self.bodies.append(self._body(f, head.lower()))
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
                conn.sendall(b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))

    def _body(self, f, head: bytes) -> bytes:
        if b"transfer-encoding: chunked" not in head:
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            return f.read(length)
        body = b""
        while size := int(f.readline().strip(), 16):
            body += f.read(size)
            f.readline()
            self.first_piece.set()
        f.readline()
        return body

    def close(self) -> None:
        self.sock.close()


def test_a_flush_of_small_ops_goes_in_one_piece_with_its_length(tmp_path):
    daemon = _Daemon(tmp_path / "pfs.sock")
    client = RemoteClient(f"unix:{tmp_path / 'pfs.sock'}")
    try:
        ops = [Put("a.txt", stream=io.BytesIO(b"hello\n")), Delete("old.txt")]
        assert client.write_files("r", "master", ops).commit == "c"
        big = [Put("big.bin", stream=io.BytesIO(b"x" * (3 << 20)))]
        assert client.write_files("r", "master", big).commit == "c"
    finally:
        client.close()
        daemon.close()
    small_head, big_head = daemon.heads
    assert b"content-length: " in small_head and b"chunked" not in small_head
    assert b"hello\n" in daemon.bodies[0] and b"old.txt" in daemon.bodies[0]
    assert b"chunked" in big_head  # past a MiB it streams, as before
    assert daemon.bodies[1].count(b"x") == 3 << 20


def test_a_put_from_a_slow_stream_starts_before_the_stream_ends(tmp_path):
    daemon = _Daemon(tmp_path / "pfs.sock")
    client = RemoteClient(f"unix:{tmp_path / 'pfs.sock'}")
    r, w = os.pipe()
    seen_early = []

    def producer() -> None:
        os.write(w, b"first ")
        seen_early.append(daemon.first_piece.wait(20))  # the daemon has it while we still write
        os.write(w, b"last\n")
        os.close(w)

    writer = threading.Thread(target=producer)
    writer.start()
    try:
        with os.fdopen(r, "rb", buffering=0) as stream:
            assert client.write_files("r", "master", [Put("slow.txt", stream=stream)]).commit == "c"
    finally:
        writer.join(30)
        client.close()
        daemon.close()
    assert seen_early == [True]
    body = daemon.bodies[0]
    assert b"slow.txt" in body and body.index(b"first ") < body.index(b"last\n")
