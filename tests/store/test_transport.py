"""The client transport against a server that drops kept-alive connections while they are idle
(the daemon does after its keep-alive timeout)."""

import http.server
import threading

from pfsfuse.api.transport import Transport


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
