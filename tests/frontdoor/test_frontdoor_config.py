"""`FrontDoorConfig` refusals and `FrontDoor` on a taken port: pure, no process is started."""

from __future__ import annotations

import socket
import subprocess
import sys

import psutil
import pytest

from bertserve.errors import ConfigError, ServerStartError
from bertserve.frontdoor import FrontDoor, FrontDoorConfig

from ..conftest import settled
from .conftest import free_pair


@pytest.mark.parametrize("options, message", [
    ({"openai_port": -1}, "openai_port -1 is not a usable port"),
    ({"openai_port": 65536}, "openai_port 65536 is not a usable port"),
    ({"bert_as_service_port": -1}, "bert_as_service_port -1 is not a usable port"),
    ({"bert_as_service_port": 65535}, "bert_as_service_port 65535 is not a usable port"),  # results would need 65536
    ({"openai_port": 0, "bert_as_service_port": 0}, "both front doors are off"),
    ({"openai_port": 5000, "bert_as_service_port": 5000}, "port 5000 is asked for twice"),
    ({"openai_port": 5001, "bert_as_service_port": 5000}, "port 5001 is asked for twice"),
    ({"timeout": 0.0}, "timeout and max_request_bytes must be positive"),
    ({"timeout": -1.0}, "timeout and max_request_bytes must be positive"),
    ({"max_request_bytes": 0}, "timeout and max_request_bytes must be positive"),
    ({"max_documents": 0}, "max_documents must be at least 1, got 0"),
    ({"max_windows": 0}, "max_windows must be at least 1, got 0"),
    # The door checks its clients' Bearer against this key and passes it on to Triton: the server's rules.
    ({"api_key": "short"}, "api_key must be at least 16"),
    ({"api_key": "a-long-enough-key-123\n"}, "api_key must be at least 16"),
    ({"api_key": "a-long-enough-key,123"}, "api_key must be at least 16"),
])
def test_unusable_configs_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        FrontDoorConfig(**options)


@pytest.mark.parametrize("options", [
    {"openai_port": 1},  # bert-as-service off: its ports are not taken, 0 and 1 included
    {"openai_port": 0, "bert_as_service_port": 65534},
    {"openai_port": 65535, "bert_as_service_port": 5000},
    {"openai_port": 4999, "bert_as_service_port": 5000},
    {"openai_port": 5002, "bert_as_service_port": 5000},
    {"openai_port": 5003, "api_key": "a-long-enough-key-123"},
])
def test_usable_configs_are_taken(options):
    assert FrontDoorConfig(**options).openai_port == options["openai_port"]


@pytest.mark.parametrize("door, taken", [("openai", 0), ("bert-as-service requests", 0),
                                         ("bert-as-service results", 1)])
def test_a_taken_port_is_named_before_anything_starts(door, taken):
    port = free_pair()
    options = {"openai_port": port} if door == "openai" else {"openai_port": 0, "bert_as_service_port": port}
    front = FrontDoor(FrontDoorConfig(host="127.0.0.1", **options))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port + taken))
        holder.listen()
        with pytest.raises(ServerStartError, match=f"front-door port {port + taken} is already in use; stop what uses "
                                                   "it or pick another"):
            front.start()
    assert not front.is_alive() and front._process is None


_OWNER = """
import os
from bertserve.frontdoor import FrontDoor, FrontDoorConfig
from bertserve.server import free_ports
door = FrontDoor(FrontDoorConfig(triton_url="127.0.0.1:1", host="127.0.0.1", openai_port=free_ports(1)[0]))
door.start()
print(door._process.pid, flush=True)
os._exit(0)  # no stop(): a crash of the owner
"""


@pytest.mark.server  # a front-door process of its own
def test_a_door_dies_with_the_process_that_started_it():
    owner = subprocess.run([sys.executable, "-c", _OWNER], capture_output=True, text=True, timeout=120)
    assert owner.returncode == 0, owner.stderr
    door = int(owner.stdout.split()[-1])
    assert not settled(lambda: _running(door), lambda running: not running), "the door outlived its owner"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
