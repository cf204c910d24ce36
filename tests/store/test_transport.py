"""The client transport against servers that drop kept-alive connections while they are idle
(the daemon does after its keep-alive timeout), close them after an answer, or cut one short."""

import http.server
import socket
import threading

import pytest

from pfsfuse.api.transport import Transport
from pfsfuse.metadata.errors import Unavailable


class _DropsAfterEachAnswer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers look kept-alive to the client

    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # and then it is gone, unannounced

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, *args):
        super().__init__(*args)
        self.dropped = threading.Semaphore(0)  # released as each connection is closed

    def shutdown_request(self, request):
        super().shutdown_request(request)
        self.dropped.release()


def test_a_streamed_request_after_the_server_dropped_the_idle_connection():
    server = _Server(("127.0.0.1", 0), _DropsAfterEachAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    t = Transport(f"127.0.0.1:{server.server_address[1]}", timeout=10)
    try:
        assert t.call("POST", "/echo", b"first") == b"first"
        assert server.dropped.acquire(timeout=10)
        # The connection looks reusable but is closed; a streamed body cannot be sent twice.
        assert t.call("POST", "/echo", iter([b"str", b"eamed"])) == b"streamed"
        assert server.dropped.acquire(timeout=10)
        assert t.call("POST", "/echo", b"third") == b"third"
    finally:
        t.close()
        server.shutdown()
        server.server_close()


class _Answers(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self):
        super().setup()
        type(self).connections += 1

    def do_GET(self):
        self.send_response(200)
        if self.path.startswith("/chunked"):  # as the daemon streams: pieces of any size
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"a", b"bc" * 40_000, b"d"):
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path.startswith("/close"):  # as the daemon does after many requests
            self.send_header("Content-Length", "3")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"bye")
        else:  # a crash mid-answer
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"short")
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def answers():
    _Answers.connections = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    t = Transport(f"127.0.0.1:{server.server_address[1]}", timeout=10)
    try:
        yield t
    finally:
        t.close()
        server.shutdown()
        server.server_close()


def test_chunked_answers_read_whole_and_piece_by_piece_on_one_connection(answers):
    with answers.stream("/chunked", {}) as pieces:
        assert b"".join(pieces) == b"a" + b"bc" * 40_000 + b"d"
    assert answers.call("GET", "/chunked") == b"a" + b"bc" * 40_000 + b"d"
    assert _Answers.connections == 1


def test_a_connection_the_server_closes_after_its_answer_is_not_reused(answers):
    assert [answers.call("GET", "/close") for _ in range(3)] == [b"bye"] * 3
    assert _Answers.connections == 3


def test_an_answer_cut_short_is_unavailable(answers):
    with pytest.raises(Unavailable, match="stopped answering"):
        answers.call("GET", "/cut")
    assert answers.call("GET", "/chunked").startswith(b"abc")  # on a new connection


class _CountedWrites:
    """A socket whose writes are recorded (a socket object takes no new attributes)."""

    def __init__(self, sock):
        self._sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data) -> None:
        self.writes.append(data)
        self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_a_request_goes_in_few_writes_and_a_big_piece_is_not_copied(monkeypatch):
    """h11 gives a request's head a piece per header, and each write wakes the daemon: a request
    with a small body is one write. A streamed body's pieces go as they come."""
    made: list[_CountedWrites] = []
    connect = socket.create_connection
    monkeypatch.setattr(
        socket, "create_connection", lambda *a, **k: made.append(_CountedWrites(connect(*a, **k))) or made[-1]
    )
    server = _Server(("127.0.0.1", 0), _DropsAfterEachAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    t = Transport(f"127.0.0.1:{server.server_address[1]}", timeout=10, token="secret")
    try:
        assert t.call("POST", "/echo", b"small body") == b"small body"
        assert len(made[0].writes) == 1 and made[0].writes[0].endswith(b"\r\n\r\nsmall body")
        assert server.dropped.acquire(timeout=10)
        big = b"x" * (100 << 10)
        assert t.call("POST", "/echo", iter([b"a" * 10, big])) == b"a" * 10 + big
        # the head; the first piece with its chunk framing; the big one's framing, itself, its
        # end; the body's end
        assert len(made[1].writes) == 6 and made[1].writes[3] is big
    finally:
        t.close()
        server.shutdown()
        server.server_close()
