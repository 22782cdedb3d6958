"""The `bertserve` command as a user runs it: serve and stop it, encode, export, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import openai
import pytest
from bert_serving.client import BertClient

from bertserve import Encoder
from bertserve.export import ExportConfig, Pooling, export_model
from bertserve.model_repository.config import parse
from bertserve.server import free_ports

from .conftest import DEFAULT_NAME, lines_until
from .frontdoor.conftest import free_pair
from .server.test_process import port_free

BERTSERVE = [sys.executable, "-m", "bertserve.cli"]


def _run(*args, **kwargs):
    return subprocess.run([*BERTSERVE, *args], capture_output=True, text=True, timeout=300, **kwargs)


API_KEY = "cli-test-api-key-0123456789"


@pytest.mark.parametrize("stop, api_key", [(signal.SIGINT, None), (signal.SIGTERM, API_KEY)],
                         ids=["SIGINT, open", "SIGTERM, with an API key"])
def test_serve_prints_its_addresses_serves_the_default_and_stops_cleanly(default_home, stop, api_key):
    http, grpc, metrics, openai_port = ports = free_ports(4)
    bert_port = free_pair()
    env = {k: v for k, v in os.environ.items() if k != "BERTSERVE_API_KEY"}
    env["BERTSERVE_HOME"] = str(default_home)  # the default model, exported there on first use
    serve = subprocess.Popen(
        [*BERTSERVE, "serve", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(metrics), "--openai-port", str(openai_port), "--bert-as-service-port", str(bert_port),
         *(["--api-key", api_key] if api_key else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A background job may inherit SIGINT ignored (Python then keeps ignoring it): give serve the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        banner = lines_until(serve.stdout, "Press Ctrl-C", timeout=120)
        assert banner and banner[0] == f"bertserve: ready, serving {default_home / 'repository'}\n", "".join(banner)
        access = "needs the API key" if api_key else "is open (no --api-key)"
        assert banner[1:] == [f"  gRPC     127.0.0.1:{grpc}\n", f"  HTTP     http://127.0.0.1:{http}\n",
                              f"  metrics  http://127.0.0.1:{metrics}/metrics\n",
                              f"  OpenAI   http://127.0.0.1:{openai_port}/v1/embeddings\n",
                              f"  BertClient(port={bert_port}, port_out={bert_port + 1})\n",
                              f"  inference {access}; admin key in {default_home / 'admin-key'}\n",
                              "Press Ctrl-C to stop.\n"]
        assert len((default_home / "admin-key").read_text().strip()) >= 16
        assert (default_home / "admin-key").stat().st_mode & 0o077 == 0, "the admin key is readable by others"
        keyless = _run("encode", "hello", "--url", f"127.0.0.1:{grpc}", env=env)
        assert (keyless.returncode, "requires an API key" in keyless.stderr) == ((1, True) if api_key else (0, False))
        with Encoder(banner[1].split()[1], timeout=30, api_key=api_key) as enc:  # the only model: no name needed
            vector = enc.encode(["hello world"])[0]
        assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1.0) < 1e-5
        # The front doors serve the same model, behind the same key.
        door = openai.OpenAI(base_url=f"http://127.0.0.1:{openai_port}/v1", api_key=api_key or "none", timeout=30,
                             max_retries=0)
        assert np.abs(np.array(door.embeddings.create(model=DEFAULT_NAME, input="hello world").data[0].embedding)
                      - vector).max() <= 1e-5
        with BertClient(ip="127.0.0.1", port=bert_port, port_out=bert_port + 1, timeout=30_000) as bc:
            assert np.abs(bc.encode(["hello world"])[0] - vector).max() <= 1e-5
        serve.send_signal(stop)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    assert "bertserve: stopping" in serve.stderr.read()
    assert all(port_free(port) for port in (*ports, bert_port, bert_port + 1)), \
        "a port is still taken after serve stopped"


def test_encode_reads_a_file_and_writes_json_lines(server, tmp_path):
    texts = ["first line", "second line", "a third, longer line of text"]
    source = tmp_path / "sentences.txt"
    source.write_text(f"{texts[0]}\n\n{texts[1]}\n   \n{texts[2]}\n")  # blank lines are skipped
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        want = enc.encode(texts)
    stdout = _run("encode", "-f", str(source), "--url", server.grpc_url, "--model", DEFAULT_NAME)
    assert stdout.returncode == 0, stdout.stderr
    out = tmp_path / "vectors.jsonl"
    to_file = _run("encode", "-f", str(source), "--url", server.grpc_url, "--model", DEFAULT_NAME, "-o", str(out))
    assert to_file.returncode == 0 and to_file.stdout == "", to_file.stderr
    for text in (stdout.stdout, out.read_text()):
        lines = text.splitlines()
        assert len(lines) == 3
        assert np.abs(np.array([json.loads(line) for line in lines]) - want).max() <= 1e-5


def test_encode_reads_stdin_and_writes_npy(server, tmp_path):
    out = tmp_path / "vectors.npy"
    result = _run("encode", "--url", server.http_url, "--model", DEFAULT_NAME, "-o", str(out),
                  input="first line\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (2, 384)


def test_encode_reports_an_unreachable_server_clearly():
    (port,) = free_ports(1)
    result = _run("encode", "hello", "--url", f"localhost:{port}", "--timeout", "5")
    assert result.returncode == 1
    assert f"could not reach a Triton server at grpc://localhost:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_refuses_an_existing_model_then_overwrite_replaces_it(tiny_bert_dir, tmp_path):
    repo = tmp_path / "repo"
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name="plain", pooling=Pooling.CLS,
                              max_seq_len=32))
    encoder_before = (repo / "plain_encoder" / "1" / "model.onnx").read_bytes()

    again = _run("export", str(tiny_bert_dir), "--repository", str(repo), "--name", "plain")
    assert again.returncode == 1 and "already exists; pass --overwrite" in again.stderr
    assert "exporting" not in again.stderr, "the refusal came after the export work"

    replaced = _run("export", str(tiny_bert_dir), "--repository", str(repo), "--name", "plain", "--pooling", "max",
                    "--layers=-2,-1", "--max-seq-len", "64", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    info = json.loads(replaced.stdout)  # the command prints what it wrote, as bertserve.json records it
    assert (info["dim"], info["pooling"], info["layers"], info["max_seq_len"]) == (128, "max", [-2, -1], 64)
    assert json.loads((repo / "plain" / "bertserve.json").read_text()) == info
    tokenizer_config = parse((repo / "plain_tokenizer" / "config.pbtxt").read_text())
    assert tokenizer_config.parameters["max_seq_len"].string_value == "64"
    assert (repo / "plain_encoder" / "1" / "model.onnx").read_bytes() != encoder_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"], "staging folders were left behind"
    assert sorted(p.name for p in repo.iterdir()) == ["plain", "plain_encoder", "plain_tokenizer"]


def test_status_command_prints_the_models(server):
    result = _run("status", "--url", server.grpc_url)
    assert result.returncode == 0, result.stderr
    assert "Triton 2.51.0" in result.stdout and f"{DEFAULT_NAME}_encoder" in result.stdout


def test_export_with_the_torch_runtime_and_tokenizer_instances(tiny_bert_dir, tmp_path):
    repo = tmp_path / "repo"
    done = _run("export", str(tiny_bert_dir), "--repository", str(repo), "--name", "t", "--runtime", "torch",
                "--tokenizer-instances", "3", "--max-seq-len", "32")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runtime"] == "torch"
    assert sorted(p.name for p in (repo / "t_encoder" / "1").iterdir()) == ["model.pt", "model.py"]
    encoder = parse((repo / "t_encoder" / "config.pbtxt").read_text())
    assert encoder.parameters["runtime"].string_value == "torch"
    assert parse((repo / "t_tokenizer" / "config.pbtxt").read_text()).instance_group[0].count == 3


def test_export_for_the_native_openvino_backend(tiny_bert_dir, tmp_path):
    """--backend openvino: OpenVINO IR for the NGC image's openvino backend, requests padded to length buckets."""
    repo = tmp_path / "repo"
    done = _run("export", str(tiny_bert_dir), "--repository", str(repo), "--name", "v", "--backend", "openvino",
                "--precision", "auto", "--performance-hint", "latency", "--max-seq-len", "64")
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["runtime"], json.loads(done.stdout)["backend"]) == ("openvino", "openvino")
    assert sorted(p.name for p in (repo / "v_encoder" / "1").iterdir()) == ["model.bin", "model.xml"]
    encoder = parse((repo / "v_encoder" / "config.pbtxt").read_text())
    assert encoder.backend == "openvino" and encoder.parameters["PERFORMANCE_HINT"].string_value == "LATENCY"
    assert parse((repo / "v_tokenizer" / "config.pbtxt").read_text()).parameters["length_buckets"].string_value == "16,32,64"


@pytest.mark.parametrize("args, message", [
    (["--runtime", "torch", "--backend", "onnxruntime"], "--runtime torch runs in the python backend"),
    (["--runtime", "torch", "--precision", "int8"], "--runtime torch runs fp16 (GPUs) or fp32, not int8"),
    (["--precision", "bf16"], "--precision bf16 runs on OpenVINO's CPU plugin; add --runtime openvino"),
    (["--runtime", "openvino", "--precision", "fp16"], "fp16 is for GPUs"),
    (["--backend", "openvino", "--runtime", "onnxruntime"], "--backend openvino runs OpenVINO IR"),
    (["--tokenizer-instances", "0"], "instances must be at least 1"),
])
def test_export_refuses_runtime_combinations_that_cannot_work(tiny_bert_dir, tmp_path, args, message):
    result = _run("export", str(tiny_bert_dir), "--repository", str(tmp_path / "repo"), *args)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "repo").exists()
