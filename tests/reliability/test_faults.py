"""Faults: a backend process killed (what an out-of-memory kill does), SIGTERM under load, a killed
tritonserver, broken model files. The service heals, stops cleanly, or fails loudly; it never hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bertserve import Encoder
from bertserve.errors import BertserveError, ServerStartError, ServerUnavailableError
from bertserve.server import TritonServer, free_ports

from ..conftest import DEFAULT_NAME, copy_model, lines_until, server_config
from .conftest import API_KEY, backend_pid, still_serves

pytestmark = pytest.mark.reliability
BERTSERVE = [sys.executable, "-m", "bertserve.cli"]


class _Load:
    """Clients sending one-sentence requests in a loop, recording when each succeeded or failed."""

    def __init__(self, server: TritonServer, clients: int = 4, api_key: str | None = API_KEY) -> None:
        self.outcomes: list[tuple[float, float, BaseException | None]] = []  # (started, ended, error)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(server, api_key)) for _ in range(clients)]

    def _client(self, server: TritonServer, api_key: str | None) -> None:
        with Encoder(server.grpc_url, model=DEFAULT_NAME, api_key=api_key, timeout=30, retries=0) as enc:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    enc.encode(["a sentence under load", "and a second one"])
                    error = None
                except BertserveError as exc:
                    error = exc
                self.outcomes.append((started, time.monotonic(), error))

    def __enter__(self) -> "_Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


# Triton 2.51's Python backend now and then aborts the whole server when a stub dies mid-request (the same
# abort is reported upstream in later versions: triton-inference-server/server#8882). `bertserve serve` then
# exits 1 for its supervisor (Docker, Kubernetes, systemd) to restart it, as a test below shows.
_TRITON_ABORT = "boost::interprocess::lock_exception"


def _kill_under_load(server: TritonServer, model: str) -> tuple[float, list]:
    """SIGKILL `model`'s backend process under load; (when, outcomes) once serving resumed, or after 30 s."""
    with _Load(server) as load:
        time.sleep(1)
        os.kill(backend_pid(server, model), signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < 30 and server.is_alive():
            time.sleep(0.2)
            recent = [o for o in load.outcomes if o[0] > killed + 0.2]
            if recent and recent[-1][2] is None and any(o[2] is not None for o in load.outcomes if o[0] > killed):
                break
    return killed, load.outcomes


@pytest.mark.parametrize("component", ["tokenizer", "encoder"])
def test_killed_backend_process_heals_under_load(default_home, component, capsys):
    model = f"{DEFAULT_NAME}_{component}"
    for attempt in (1, 2):  # a fresh server each time, since the upstream abort may end one
        with TritonServer(server_config(default_home / "repository", api_key=API_KEY, heal=True)) as server:
            killed, outcomes = _kill_under_load(server, model)
            if not server.is_alive() and _TRITON_ABORT in server.logs():
                with capsys.disabled():
                    print(f"\n{component} process killed under load: tritonserver aborted ({_TRITON_ABORT}), "
                          f"attempt {attempt}")
                continue
            failed = [o for o in outcomes if o[2] is not None]
            assert failed, "the kill did not show: the test proves nothing"
            last_failure = max(f[0] for f in failed)
            served_after = [o[1] for o in outcomes if o[0] > last_failure and o[2] is None]
            assert served_after, "never served again after the kill"
            recovered = min(served_after)
            with capsys.disabled():
                print(f"\n{component} process killed under load: serving again after {recovered - killed:.1f} s "
                      f"({len(failed)} requests failed meanwhile)")
            assert recovered - killed < 30
            assert server._supervisor.reloads >= 1
            still_serves(server)
            return
    pytest.fail(f"tritonserver aborted twice in a row when a backend process was killed under load ({_TRITON_ABORT})")


def test_health_command_proves_serving(throwaway_server):
    def health():
        return subprocess.run([*BERTSERVE, "health", "--url", throwaway_server.grpc_url], capture_output=True,
                              text=True, timeout=60)

    ok = health()
    assert ok.returncode == 0 and f"{DEFAULT_NAME} serves" in ok.stdout, ok.stderr
    os.kill(backend_pid(throwaway_server, f"{DEFAULT_NAME}_tokenizer"), signal.SIGKILL)  # no supervisor here
    time.sleep(0.5)
    broken = health()
    assert broken.returncode == 1 and "is not healthy" in broken.stderr, broken.stdout + broken.stderr
    assert throwaway_server.is_ready(), "Triton's own readiness does not notice, which is why `health` exists"


def test_sigterm_under_load_lets_in_flight_requests_finish(default_home):
    server = TritonServer(server_config(default_home / "repository"))
    server.start()
    process = server._process
    with _Load(server, clients=6, api_key=None) as load:
        time.sleep(4)
        stopping = time.monotonic()
        server.stop()
        stopped = time.monotonic()
    # Exit code 0: Triton finished within its grace period (past it, Triton fails and stop() kills it).
    assert process.returncode == 0 and stopped - stopping < server.config.stop_timeout + 5
    # In flight at SIGTERM: started well before it (on a loaded machine, a client takes a while to send).
    before = [o for o in load.outcomes if o[0] < stopping - 2]
    after = [o for o in load.outcomes if o[0] > stopped]
    assert before and all(error is None for _, _, error in before), [(stopping - s, e) for s, _, e in before if e]
    assert all(isinstance(error, ServerUnavailableError) for _, _, error in after)
    assert all(ended - started < 30 for started, ended, _ in load.outcomes)


def test_killed_tritonserver_makes_serve_exit_non_zero(default_home):
    http, grpc, metrics = free_ports(3)
    serve = subprocess.Popen(
        [*BERTSERVE, "serve", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "BERTSERVE_HOME": str(default_home)},
    )
    try:
        assert lines_until(serve.stdout, "Press Ctrl-C", timeout=120), "serve never became ready"
        children = subprocess.run(["pgrep", "-P", str(serve.pid), "tritonserver"], capture_output=True, text=True)
        os.kill(int(children.stdout.split()[0]), signal.SIGKILL)
        assert serve.wait(timeout=30) == 1
    finally:
        if serve.poll() is None:
            serve.kill()
    assert "tritonserver exited unexpectedly" in serve.stderr.read()


@pytest.mark.parametrize("broken, named", [
    ("encoder/1/model.onnx", "model.onnx"),
    ("tokenizer/1/tokenizer.json", "tokenizer.json"),
], ids=["corrupt encoder graph", "missing tokenizer file"])
def test_broken_model_file_fails_start_naming_it(default_home, tmp_path, broken, named):
    repo = tmp_path / "repository"
    repo.mkdir()
    copy_model(default_home / "repository", repo, DEFAULT_NAME)
    path = repo / f"{DEFAULT_NAME}_{broken}"
    if named == "model.onnx":
        path.write_bytes(b"not a graph")
    else:
        path.unlink()
    with pytest.raises(ServerStartError, match=named):
        TritonServer(server_config(repo, startup_timeout=120)).start()
