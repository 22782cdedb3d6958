"""The `bertserve` command as a user runs it: serve the default model, encode, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bertserve.server import free_ports

BERTSERVE = [sys.executable, "-m", "bertserve.cli"]


def _run(*args, **kwargs):
    return subprocess.run([*BERTSERVE, *args], capture_output=True, text=True, timeout=300, **kwargs)


def test_serve_with_no_model_exports_and_serves_the_default(tmp_path):
    http, grpc, metrics = free_ports(3)
    env = {**os.environ, "BERTSERVE_HOME": str(tmp_path / "home")}
    serve = subprocess.Popen(
        [*BERTSERVE, "serve", "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        first_line = serve.stdout.readline()  # blocks until ready (or exit)
        assert first_line.startswith("bertserve: ready"), first_line + serve.stderr.read()
        result = _run("encode", "hello world", "--url", f"localhost:{grpc}")
        assert result.returncode == 0, result.stderr
        vector = json.loads(result.stdout)
        assert len(vector) == 384 and all(isinstance(v, float) for v in vector)
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    assert (tmp_path / "home" / "repository" / "all-MiniLM-L6-v2" / "bertserve.json").is_file()


def test_encode_reads_stdin_and_writes_npy(server, tmp_path):
    out = tmp_path / "vectors.npy"
    result = _run("encode", "--url", server.http_url, "--model", "all-MiniLM-L6-v2", "-o", str(out),
                  input="first line\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (2, 384)


def test_encode_reports_an_unreachable_server_clearly():
    (port,) = free_ports(1)
    result = _run("encode", "hello", "--url", f"localhost:{port}", "--timeout", "5")
    assert result.returncode == 1
    assert f"could not reach a Triton server at grpc://localhost:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_command_writes_a_self_describing_model(plain_bert_dir, tmp_path):
    repo = tmp_path / "repo"
    result = _run("export", str(plain_bert_dir), "--repository", str(repo), "--name", "plain", "--pooling", "cls",
                  "--layers=-2,-1", "--max-seq-len", "32")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["dim"], info["pooling"], info["layers"], info["max_seq_len"]) == (768, "cls", [-2, -1], 32)
    assert json.loads((repo / "plain" / "bertserve.json").read_text()) == info
    again = _run("export", str(plain_bert_dir), "--repository", str(repo), "--name", "plain")
    assert again.returncode == 1 and "already exists; pass --overwrite" in again.stderr


def test_status_command_prints_the_models(server):
    result = _run("status", "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "Triton 2.51.0" in result.stdout and "all-MiniLM-L6-v2_encoder" in result.stdout
