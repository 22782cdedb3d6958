"""Healing that clients don't see: a backend process killed under load (what an out-of-memory kill does) costs
the clients of the SDK and of the OpenAI door latency, not failures.

One server for the module (a fresh one only after tritonserver aborted), with an API key, its OpenAI door and a
supervisor probing every 0.1 s. The first test kills the tokenizer's process before any supervisor runs, to see
what a caller meets, then starts one; the next two kill the tokenizer again and then the encoder under load, each
a death after a reload. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Optional

import pytest

from bertserve import Encoder
from bertserve.errors import BertserveError, ModelNotFoundError, ModelUnavailableError
from bertserve.frontdoor import FrontDoor, FrontDoorConfig
from bertserve.server import TritonServer, free_ports
from bertserve.server.supervisor import _PROBE_EVERY, _UNHEALTHY, PROBE, PROCESS_TABLE, Supervisor, backend_processes

from ..conftest import DEFAULT_NAME, server_config, settled
from .conftest import API_KEY, KEYED, kill_backend, still_serves

pytestmark = pytest.mark.reliability
PROBE_INTERVAL = 0.1
HEAL_BOUND = 30.0  # a backstop only: the reload itself takes a few seconds
# Triton 2.51's Python backend now and then aborts the whole server when a stub dies mid-request (the same
# abort is reported upstream in later versions: triton-inference-server/server#8882). `bertserve serve` then
# exits 1 for its supervisor (Docker, Kubernetes, systemd) to restart it: test_faults.py shows that.
TRITON_ABORT = "boost::interprocess::lock_exception"
TEXTS = ["a sentence under load", "and a second one"]


class TritonAbortWarning(UserWarning):
    """tritonserver aborted when a backend process was killed under load, and the kill ran again on a fresh one."""


class _Healing:
    """The module's tritonserver, its OpenAI door, and a supervisor once `supervise()` started one."""

    def __init__(self, repository: Path) -> None:
        self._repository = repository
        self.server: Optional[TritonServer] = None
        self.door: Optional[FrontDoor] = None
        self.supervisor: Optional[Supervisor] = None

    def start(self, supervised: bool) -> None:
        # heal=False: the supervisor is this module's to start, after the first test looked at a dead backend.
        self.server = TritonServer(server_config(self._repository, api_key=API_KEY, probe_interval=PROBE_INTERVAL))
        self.server.start()
        (openai_port,) = free_ports(1)
        self.door = FrontDoor(FrontDoorConfig(triton_url=self.server.grpc_url, host="127.0.0.1",
                                              openai_port=openai_port, api_key=API_KEY))
        self.door.start()
        if supervised:
            self.supervise()

    def supervise(self) -> Supervisor:
        if self.supervisor is None:
            self.supervisor = Supervisor(self.server.watched())
            self.supervisor.start()
        return self.supervisor

    def restart(self, supervised: bool) -> None:
        self.stop()
        self.start(supervised)

    def stop(self) -> None:
        supervisor, door, server = self.supervisor, self.door, self.server
        self.supervisor = self.door = self.server = None
        for part in (supervisor, door, server):
            if part is not None:
                part.stop()


@pytest.fixture(scope="module")
def healing(default_home: Path):
    healing = _Healing(default_home / "repository")
    healing.start(supervised=False)
    try:
        yield healing
    finally:
        healing.stop()


class _Load:
    """SDK clients (default retries) and one client of the OpenAI door, each sending requests in a loop and
    recording (started, ended, error) per request, error None for a success; and a watcher of the ensemble's
    readiness, recording when Triton called it not ready."""

    def __init__(self, healing: _Healing, clients: int = 4) -> None:
        self.sdk: list[tuple[float, float, Optional[Exception]]] = []
        self.door: list[tuple[float, float, Optional[str]]] = []
        self.not_ready: list[float] = []
        self.sdk_retries = 0
        self._server, self._door = healing.server, healing.door
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._sdk_client) for _ in range(clients)]
        self._threads += [threading.Thread(target=self._door_client), threading.Thread(target=self._readiness)]

    def _sdk_client(self) -> None:
        with Encoder(self._server.grpc_url, model=DEFAULT_NAME, api_key=API_KEY, timeout=30) as enc:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    enc.encode(TEXTS)
                    error = None
                except Exception as exc:  # any failure counts, not only the SDK's own errors
                    error = exc
                self.sdk.append((started, time.monotonic(), error))
            with self._lock:
                self.sdk_retries += enc.status().retries

    def _door_client(self) -> None:
        port = self._door.config.openai_port
        body = json.dumps({"model": DEFAULT_NAME, "input": TEXTS})
        while not self._stop.is_set():
            started = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("POST", "/v1/embeddings", body=body,
                                   headers={**KEYED, "Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                error = None if response.status == 200 else f"{response.status} {answer[:300]!r}"
            except (OSError, http.client.HTTPException) as exc:
                error = repr(exc)
            finally:
                connection.close()
            self.door.append((started, time.monotonic(), error))

    def _readiness(self) -> None:
        url = f"{self._server.http_url}/v2/models/{DEFAULT_NAME}/ready"
        while not self._stop.wait(0.05):
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    ready = answer.status == 200
            except urllib.error.HTTPError:  # 400: not ready
                ready = False
            except OSError:  # the server is gone: the abort check tells
                return
            if not ready:
                self.not_ready.append(time.monotonic())

    def served_since(self, moment: float) -> tuple[bool, bool]:
        """Whether an SDK request, and a door request, that started after `moment` succeeded."""
        return (any(s > moment and e is None for s, _, e in self.sdk),
                any(s > moment and e is None for s, _, e in self.door))

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


def test_a_dead_backend_is_unavailable_to_callers_and_found_by_the_probe(healing):
    """With no supervisor: a caller gets "unavailable" (never "not found"), in Triton's words that the supervisor
    reads; once one starts, its probe (the process table never saw that process) finds the death and heals it."""
    if healing.supervisor is not None:  # only when run out of the module's order
        healing.restart(supervised=False)
    server, model = healing.server, f"{DEFAULT_NAME}_tokenizer"
    with Encoder(server.grpc_url, model=DEFAULT_NAME, api_key=API_KEY, timeout=10, retries=0) as once:
        once.info()
        kill_backend(server, model)
        with pytest.raises(BertserveError) as raised:
            once.encode(["through a dead backend"])
    error = raised.value
    assert isinstance(error, ModelUnavailableError) and not isinstance(error, ModelNotFoundError), repr(error)
    assert _UNHEALTHY.findall(str(error)) == [model], str(error)
    assert "unavailable" in error.detail and server.grpc_url not in error.detail, error.detail

    with Encoder(server.grpc_url, model=DEFAULT_NAME, api_key=API_KEY, timeout=3) as patient:
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="is unavailable"):
            patient.encode(["waits for a backend nobody heals"])
        assert time.monotonic() - started < 2 * 3  # its timeout, and at most one try begun before it ran out
        assert patient.status().retries >= 1 and patient.status().failures == 1

    supervisor = healing.supervise()
    assert settled(lambda: supervisor.reloads, lambda n: n >= 1, timeout=HEAL_BOUND) == 1
    assert supervisor.detected == {PROCESS_TABLE: 0, PROBE: 1}
    still_serves(server)


@pytest.mark.parametrize("component", ["tokenizer", "encoder"])
def test_a_backend_killed_under_load_heals_unseen_by_clients(healing, component):
    """Each kill: exactly one reload, found in the process table, and no failed SDK call or door request. The
    encoder dies after the tokenizer was reloaded: the supervisor follows the processes a reload replaced."""
    model = f"{DEFAULT_NAME}_{component}"
    for attempt in (1, 2):
        healing.supervise()
        outcome = _kill_under_load(healing, model)
        if outcome is not None:
            break
        warnings.warn(TritonAbortWarning(
            f"tritonserver aborted ({TRITON_ABORT}) when the {component} process was killed under load "
            f"(attempt {attempt} of 2); the kill runs again on a fresh server"))
        healing.restart(supervised=True)
    else:
        pytest.fail(f"tritonserver aborted twice in a row when a backend process was killed under load "
                    f"({TRITON_ABORT})")
    load, killed, healed, reloads, detected = outcome
    supervisor = healing.supervisor

    failed_sdk = [(round(s - killed, 2), repr(e)) for s, _, e in load.sdk if e is not None]
    failed_door = [(round(s - killed, 2), e) for s, _, e in load.door if e is not None]
    assert not failed_sdk, f"{len(failed_sdk)} of {len(load.sdk)} SDK calls failed: {failed_sdk[:5]}"
    assert not failed_door, f"{len(failed_door)} of {len(load.door)} door requests failed: {failed_door[:5]}"
    assert load.sdk_retries > 0, "no SDK call met the dead backend: the kill did not show, the test proves nothing"
    # Loaded before unloaded: the ensemble stays loaded through the reload, so only the dead backend's own
    # requests have to wait (an unload first makes every request "unknown model" for seconds).
    assert not load.not_ready, f"the ensemble was not ready {len(load.not_ready)} times during the heal"
    assert healed - killed < HEAL_BOUND

    # No reload storm: a full probe cycle, and ten rounds of the process table, after the heal add nothing.
    checks = supervisor.checks
    settled(lambda: supervisor.checks, lambda n: n > checks + _PROBE_EVERY, timeout=HEAL_BOUND)
    assert supervisor.reloads - reloads == 1
    assert {path: supervisor.detected[path] - detected[path] for path in detected} == {PROCESS_TABLE: 1, PROBE: 0}
    assert model in backend_processes(healing.server.pid).values()
    still_serves(healing.server)


def _kill_under_load(healing: _Healing, model: str) -> Optional[tuple[_Load, float, float, int, dict[str, int]]]:
    """SIGKILL `model`'s backend process under load, and wait until the supervisor reloaded it and both kinds
    of client were served again: (load, killed, healed, reloads before, detected before), or None when
    tritonserver aborted."""
    server, supervisor = healing.server, healing.supervisor
    reloads, detected = supervisor.reloads, dict(supervisor.detected)
    with _Load(healing) as load:
        flowing = settled(lambda: load.served_since(0), all, timeout=60)
        assert all(flowing), "the load never got going"
        killed = time.monotonic()
        kill_backend(server, model)
        settled(lambda: supervisor.reloads > reloads or not server.is_alive(), bool, timeout=HEAL_BOUND)
        healed = time.monotonic()
        served = settled(lambda: load.served_since(healed), lambda got: all(got) or not server.is_alive(),
                         timeout=HEAL_BOUND)
    if not server.is_alive() and TRITON_ABORT in server.logs():
        return None
    assert supervisor.reloads > reloads, f"not reloaded within {HEAL_BOUND:.0f} s of the kill"
    assert all(served), f"served again after the reload (SDK, door): {served}"
    return load, killed, healed, reloads, detected
