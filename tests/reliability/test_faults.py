"""Faults: a backend process killed (what an out-of-memory kill does), a killed tritonserver, broken model files.
The service fails loudly and leaves nothing behind; it never hangs. (Healing: test_heal.py; a stop under load:
tests/server/test_process.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bertserve.errors import ServerStartError
from bertserve.server import TritonServer, free_ports
from bertserve.server.supervisor import backend_processes

from ..conftest import DEFAULT_NAME, copy_model, lines_until, server_config, settled
from ..server.test_process import alive, port_free
from .conftest import kill_backend

pytestmark = pytest.mark.reliability
BERTSERVE = [sys.executable, "-m", "bertserve.cli"]


def test_health_command_proves_serving(throwaway_server):
    def health():
        return subprocess.run([*BERTSERVE, "health", "--url", throwaway_server.grpc_url], capture_output=True,
                              text=True, timeout=60)

    ok = health()
    assert ok.returncode == 0 and f"{DEFAULT_NAME} serves" in ok.stdout, ok.stderr
    stubs = kill_backend(throwaway_server, f"{DEFAULT_NAME}_tokenizer")  # no supervisor here
    assert not settled(lambda: set(stubs) & backend_processes(throwaway_server.pid).keys(), lambda left: not left)
    broken = health()
    assert broken.returncode == 1 and "is not healthy" in broken.stderr, broken.stdout + broken.stderr
    assert throwaway_server.is_ready(), "Triton's own readiness does not notice, which is why `health` exists"


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...) that runs now."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_killed_tritonserver_makes_serve_exit_non_zero_leaving_nothing_behind(default_home):
    http, grpc, metrics, openai = free_ports(4)
    serve = subprocess.Popen(
        [*BERTSERVE, "serve", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(metrics), "--openai-port", str(openai), "--bert-as-service-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "BERTSERVE_HOME": str(default_home)},
    )
    try:
        assert lines_until(serve.stdout, "Press Ctrl-C", timeout=120), "serve never became ready"
        children = _descendants(serve.pid)  # tritonserver, its backend processes, the front door
        triton = int(subprocess.run(["pgrep", "-P", str(serve.pid), "tritonserver"], capture_output=True,
                                    text=True).stdout.split()[0])
        assert len(children) >= 4 and backend_processes(triton), children  # or the check below proves nothing
        os.kill(triton, signal.SIGKILL)
        assert serve.wait(timeout=30) == 1
    finally:
        if serve.poll() is None:
            serve.kill()
    assert "tritonserver exited unexpectedly" in serve.stderr.read()
    # "Ends every process it started" (README): none outlives serve, and every port it listened on is free.
    assert settled(lambda: {pid for pid in children if alive(pid)}, lambda left: not left) == set()
    assert [port for port in (http, grpc, metrics, openai) if not port_free(port)] == []


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
