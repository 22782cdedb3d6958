"""A front door (OpenAI API and bert-as-service's protocol) in front of the session's real Triton server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from bertserve import Encoder
from bertserve.frontdoor import FrontDoor, FrontDoorConfig
from bertserve.server import TritonServer, free_ports

from ..conftest import DEFAULT_NAME

API_KEY = "front-door-test-key-0123456789"


def free_pair() -> int:
    """A port whose next port is free too (bert-as-service's request and result ports)."""
    for _ in range(100):
        (port,) = free_ports(1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


def internals(server: TritonServer) -> tuple[str, ...]:
    """What would give away the Triton server behind a door: words that no answer of a door may contain."""
    return ("localhost", "127.0.0.1", "grpc://", "http://", *(str(port) for port in server.config.ports.values()))


def door_config(server: Optional[TritonServer], **overrides: Any) -> FrontDoorConfig:
    """A loopback front door in front of `server` (or of `triton_url` in `overrides`), on ports free right now."""
    (openai_port,) = free_ports(1)
    options = {"host": "127.0.0.1", "openai_port": openai_port, "bert_as_service_port": free_pair(),
               "bert_as_service_model": DEFAULT_NAME, "api_key": API_KEY, **overrides}
    options.setdefault("triton_url", server.grpc_url if server is not None else None)
    return FrontDoorConfig(**options)


@pytest.fixture(scope="session")
def door(server):
    with FrontDoor(door_config(server)) as front:
        # The key travels in the environment: the command line is readable by every user (`ps`).
        command_line = Path(f"/proc/{front._process.pid}/cmdline").read_bytes()
        assert b"bertserve.frontdoor" in command_line and API_KEY.encode() not in command_line
        yield front


@pytest.fixture(scope="module")
def http(door):
    """A plain HTTP client of the door, with its key; every exchange checked against the door's document."""
    from .test_openai import _conformance

    with httpx.Client(base_url=door.openai_url.removesuffix("/v1"), timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"},
                      event_hooks={"response": [_conformance(door).hook]}) as client:
        yield client


class _Encoders(dict):
    """The SDK's encoder of each model asked for, opened on first use."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url

    def __missing__(self, model: str) -> Encoder:
        self[model] = Encoder(self._url, model=model)
        return self[model]


@pytest.fixture(scope="module")
def sdks(server):
    """The SDK's encoder of any model the door's answers are compared with (`sdks[name]`), over gRPC."""
    encoders = _Encoders(server.grpc_url)
    yield encoders
    for encoder in encoders.values():
        encoder.close()
