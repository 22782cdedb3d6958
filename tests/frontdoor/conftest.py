"""A front door (OpenAI API and bert-as-service's protocol) in front of the session's real Triton server."""

from __future__ import annotations

import socket

import pytest

from bertserve.frontdoor import FrontDoor, FrontDoorConfig
from bertserve.server import free_ports

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


def door_config(server, **overrides) -> FrontDoorConfig:
    (openai_port,) = free_ports(1)
    return FrontDoorConfig(**{"triton_url": server.grpc_url, "host": "127.0.0.1", "openai_port": openai_port,
                              "bert_as_service_port": free_pair(), "bert_as_service_model": DEFAULT_NAME,
                              "api_key": API_KEY, **overrides})


@pytest.fixture(scope="session")
def door(server):
    with FrontDoor(door_config(server)) as front:
        yield front
