"""Every network call is bounded: a peer that accepts connections but never answers raises, it never hangs.
(A client of a server that stopped: tests/server/test_process.py, in the one stop under load.)"""

from __future__ import annotations

import socket
import time

import pytest

from bertserve import Encoder
from bertserve.errors import RequestTimeoutError, ServerUnavailableError
from bertserve.server import free_ports


@pytest.fixture
def silent_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_silent_server_times_out(scheme, silent_port):
    started = time.monotonic()
    with Encoder(f"{scheme}://127.0.0.1:{silent_port}", timeout=1) as enc:
        with pytest.raises(RequestTimeoutError, match="did not answer within the timeout"):
            enc.encode(["hello"])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_nothing_listening_names_the_address(scheme):
    (port,) = free_ports(1)
    with Encoder(f"{scheme}://127.0.0.1:{port}", timeout=5) as enc:
        with pytest.raises(ServerUnavailableError, match=f"{scheme}://127.0.0.1:{port}.*bertserve serve"):
            enc.encode(["hello"])

