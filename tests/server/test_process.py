"""The tritonserver process: refusals before start, readiness, and a clean stop that frees its ports."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from bertserve.errors import ServerStartError
from bertserve.export import Backend, Deployment, ExportConfig, export_model
from bertserve.server import TritonServer
from bertserve.server.supervisor import backend_processes

from ..conftest import server_config, settled


def port_free(port: int) -> bool:
    """Nothing listens on `port`, and a new server can bind it (with SO_REUSEADDR, as tritonserver does)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(ServerStartError, match="does not exist; export a model first"):
        TritonServer(server_config(tmp_path / "nowhere")).start()


def test_busy_port_is_refused_with_the_option_to_change(tmp_path):
    config = server_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", config.grpc_port))
        blocker.listen()
        with pytest.raises(ServerStartError, match=f"grpc port {config.grpc_port} is already in use.*--grpc-port"):
            TritonServer(config).start()


@pytest.mark.server
def test_broken_model_fails_start_with_the_server_log(tmp_path):
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 1\n')
    (broken / "1" / "model.py").write_text("raise RuntimeError('model failed to import')\n")
    with pytest.raises(ServerStartError, match="model failed to import"):
        TritonServer(server_config(tmp_path / "repo", startup_timeout=120)).start()


def test_ready_then_a_clean_stop_within_the_grace_period(throwaway_server):
    server = throwaway_server
    assert server.is_alive() and server.is_ready()
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert b"nv_inference_request_success" in response.read()
    process = server._process
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < server.config.stop_timeout
    assert process.returncode == 0, "tritonserver was killed or failed instead of stopping cleanly"
    assert not server.is_alive() and not server.is_ready()
    assert all(port_free(port) for port in server.config.ports.values())


def test_repository_needing_a_native_backend_is_refused_by_name(tiny_bert_dir, tmp_path):
    repo = tmp_path / "repo"
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name="native",
                              deployment=Deployment(Backend.ONNXRUNTIME)))
    with pytest.raises(ServerStartError, match="model 'native_encoder' needs Triton's 'onnxruntime_onnx' backend.*"
                                               "--backend python.*docker compose up"):
        TritonServer(server_config(repo)).start()


def test_missing_installed_tritonserver_is_named(tmp_path):
    with pytest.raises(ServerStartError, match="/nowhere/bin/tritonserver is missing.*/opt/tritonserver"):
        TritonServer(server_config(tmp_path, tritonserver=Path("/nowhere/bin/tritonserver"))).start()


def _alive_in_group(group: int) -> set[int]:
    """Processes of process group `group` that still run (not zombies)."""
    alive = set()
    for entry in Path("/proc").iterdir():
        try:
            state, _, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            alive.add(int(entry.name))
    return alive


def test_a_crashed_tritonserver_leaves_no_backend_process_behind(throwaway_server):
    """A backend stub busy when tritonserver aborts (one loading a model, say) outlives it by minutes, or for
    good; stop() ends it. Here a stub is frozen so that it cannot notice on its own."""
    group = throwaway_server.pid
    stubs = backend_processes(group)
    assert stubs, "no backend processes to watch: the test proves nothing"
    os.kill(next(iter(stubs)), signal.SIGSTOP)
    os.kill(group, signal.SIGKILL)  # as an abort ends it
    throwaway_server._process.wait()
    throwaway_server.stop()
    assert settled(lambda: _alive_in_group(group), lambda alive: not alive, timeout=5) == set()
