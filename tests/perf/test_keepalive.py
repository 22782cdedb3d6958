"""The benchmarks' keep-alive HTTP client: one connection per thread, a new one when the server closed it."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from perf.keepalive import KeepAliveClient


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; after a "close-after" request it hangs up without saying so
    connections: set = set()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.connections.add(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = body == b"close-after"  # as a server closing an idle connection does

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo():
    _Echo.connections = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_connection_is_kept_and_a_closed_one_replaced(echo):
    client = KeepAliveClient("127.0.0.1", echo.server_address[1], timeout=10)
    assert [client.post("/", b"%d" % i) for i in range(3)] == [(200, b"0"), (200, b"1"), (200, b"2")]
    assert len(_Echo.connections) == 1
    assert client.post("/", b"close-after") == (200, b"close-after")
    time.sleep(0.2)  # the server has hung up; the client learns it on its next request
    assert client.post("/", b"again") == (200, b"again")
    assert len(_Echo.connections) == 2


def test_each_thread_has_its_own_connection(echo):
    client = KeepAliveClient("127.0.0.1", echo.server_address[1], timeout=10)
    threads = [threading.Thread(target=lambda: [client.post("/", b"x") for _ in range(3)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(_Echo.connections) == 4
