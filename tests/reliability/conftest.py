"""A server as the network meets it (API key, admin key, supervisor), and raw clients that bypass the SDK.

Every case asserts the answer a client gets and that the server still serves afterwards; error bodies
are checked for what they must never carry. Loads and faults touch only servers started here, on
127.0.0.1, with loops bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from bertserve import Encoder
from bertserve.server import TritonServer
from bertserve.server.supervisor import backend_processes

from ..conftest import DEFAULT_NAME, server_config

API_KEY = "reliability-api-key-0123456789"
KEYED = {"Authorization": f"Bearer {API_KEY}"}
_INTERNALS = re.compile(r"(/[\w.-]+){2,}|triton_python_backend_shm_region|Traceback|File \"", re.IGNORECASE)


@pytest.fixture(scope="session")
def guarded(default_home: Path):
    """The default model served with an API key, the admin key and the supervisor, as `bertserve serve` runs it;
    one for the session: no test here stops or breaks it."""
    with TritonServer(server_config(default_home / "repository", api_key=API_KEY, heal=True)) as triton:
        yield triton


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def error(self) -> str:
        return json.loads(self.body)["error"]


def post(server: TritonServer, body: bytes | str, headers: Optional[dict] = None, model: str = DEFAULT_NAME,
         path: Optional[str] = None) -> Answer:
    """One raw HTTP request to the server (the API key included unless `headers` says otherwise)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.config.http_port, timeout=60)
    try:
        connection.request("POST", path or f"/v2/models/{model}/infer", body=body,
                           headers=KEYED if headers is None else headers)
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()


def infer_json(*items: str, name: str = "text", datatype: str = "BYTES", shape: Optional[list] = None,
               extra: tuple = ()) -> str:
    tensor = {"name": name, "shape": shape or [len(items), 1], "datatype": datatype, "data": list(items)}
    return json.dumps({"inputs": [tensor, *extra]})


def assert_clean(text: str) -> None:
    """An error message a client may see: no file paths, no shared-memory names, no stack traces."""
    assert not _INTERNALS.search(text), f"the error shows internals: {text}"


def still_serves(server: TritonServer) -> None:
    with Encoder(server.grpc_url, model=DEFAULT_NAME, api_key=API_KEY, timeout=60) as enc:
        assert enc.encode(["still serving"]).shape == (1, 384)


def backend_pids(server: TritonServer, model: str) -> list[int]:
    """The processes running `model`, one per instance (two by default)."""
    pids = sorted(pid for pid, name in backend_processes(server.pid).items() if name == model)
    assert pids, f"no backend process runs {model}"
    return pids


def kill_backend(server: TritonServer, model: str) -> list[int]:
    """SIGKILL every process of `model`, as an out-of-memory kill would: no instance is left to serve it."""
    pids = backend_pids(server, model)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def rss_mb(pid: int) -> float:
    """Current resident memory of a process (not its peak)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def vectors(server: TritonServer, texts: list[str], protocol: str = "grpc") -> np.ndarray:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with Encoder(url, model=DEFAULT_NAME, api_key=API_KEY, timeout=60) as enc:
        return enc.encode(texts)
