"""The tritonserver process: refusals before start, clean stop, and readiness."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from bertserve.errors import ServerStartError
from bertserve.export import Backend, Deployment, ExportConfig, export_model
from bertserve.server import ServerConfig, TritonServer

from bertserve.server import free_ports


def _config(repository, **overrides):
    http, grpc, metrics = free_ports(3)
    return ServerConfig(repository=repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
                        host="127.0.0.1", **overrides)


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(ServerStartError, match="does not exist; export a model first"):
        TritonServer(_config(tmp_path / "nowhere")).start()


def test_busy_port_is_refused_with_the_option_to_change(repository):
    config = _config(repository)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", config.grpc_port))
        blocker.listen()
        with pytest.raises(ServerStartError, match=f"grpc port {config.grpc_port} is already in use.*--grpc-port"):
            TritonServer(config).start()


def test_broken_model_fails_start_with_the_server_log(tmp_path):
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 1\n')
    (broken / "1" / "model.py").write_text("raise RuntimeError('model failed to import')\n")
    with pytest.raises(ServerStartError, match="model failed to import"):
        TritonServer(_config(tmp_path / "repo", startup_timeout=120)).start()


def test_start_ready_stop(repository):
    server = TritonServer(_config(repository))
    with server:
        assert server.is_alive() and server.is_ready()
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            assert b"nv_inference_request_success" in response.read()
        process = server._process
    assert not server.is_alive()
    assert process.returncode is not None
    assert not server.is_ready()


def test_repository_needing_a_native_backend_is_refused_by_name(plain_bert_dir, tmp_path):
    repo = tmp_path / "repo"
    export_model(ExportConfig(model_dir=plain_bert_dir, repository=repo, name="native", max_seq_len=32,
                              deployment=Deployment(Backend.ONNXRUNTIME)))
    with pytest.raises(ServerStartError, match="model 'native_encoder' needs Triton's 'onnxruntime_onnx' backend.*"
                                               "--backend python.*docker compose up"):
        TritonServer(_config(repo)).start()
