"""The `bertserve` command as a user runs it: serve and stop it, encode, export, status.

Every command but `serve` runs in this process, through `main`: the same code without a Python start (and a torch
import) per call. `serve` runs as its own process, since signals stop it; one test runs the installed `bertserve`.
"""

from __future__ import annotations

import _thread
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import openai
import psutil
import pytest
from bert_serving.client import BertClient

from bertserve import Encoder
from bertserve.cli import main
from bertserve.export import default_encoder
from bertserve.model_repository.config import parse
from bertserve.server import free_ports

from .conftest import CLASSIFY_NAME, DEFAULT_NAME, RERANK_NAME, SPARSE_NAME, lines_until
from .frontdoor.conftest import free_pair
from .server.test_process import port_free

BERTSERVE = [sys.executable, "-m", "bertserve.cli"]
API_KEY = "cli-test-api-key-0123456789"


def _main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`bertserve ARGS` run in this process: its exit status, stdout and stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stop, api_key", [(signal.SIGINT, None), (signal.SIGTERM, API_KEY)],
                         ids=["SIGINT, open", "SIGTERM, with an API key"])
def test_serve_prints_its_addresses_serves_the_default_and_stops_cleanly(default_home, stop, api_key, capsys,
                                                                           monkeypatch):
    """The one run of `serve` as a user starts it: a process of its own, stopped by a signal."""
    http, grpc, metrics, openai_port = ports = free_ports(4)
    bert_port = free_pair()
    env = {k: v for k, v in os.environ.items() if k != "BERTSERVE_API_KEY"}
    env["BERTSERVE_HOME"] = str(default_home)  # the default model, exported there already
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
        monkeypatch.delenv("BERTSERVE_API_KEY", raising=False)
        keyless, _, err = _main(capsys, "encode", "hello", "--url", f"127.0.0.1:{grpc}")
        assert (keyless, "requires an API key" in err) == ((1, True) if api_key else (0, False))
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


def test_encode_reads_a_file_and_writes_json_lines(server, tmp_path, capsys):
    texts = ["first line", "second line", "a third, longer line of text"]
    source = tmp_path / "sentences.txt"
    source.write_text(f"{texts[0]}\n\n{texts[1]}\n   \n{texts[2]}\n")  # blank lines are skipped
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        want = enc.encode(texts)
    code, stdout, err = _main(capsys, "encode", "-f", str(source), "--url", server.grpc_url, "--model", DEFAULT_NAME)
    assert code == 0, err
    out = tmp_path / "vectors.jsonl"
    code, to_file, err = _main(capsys, "encode", "-f", str(source), "--url", server.grpc_url, "--model", DEFAULT_NAME,
                               "-o", str(out))
    assert code == 0 and to_file == "", err
    for text in (stdout, out.read_text()):
        lines = text.splitlines()
        assert len(lines) == 3
        assert np.abs(np.array([json.loads(line) for line in lines]) - want).max() <= 1e-5


def test_encode_reads_stdin_and_writes_npy(server, tmp_path, capsys, monkeypatch):
    out = tmp_path / "vectors.npy"
    monkeypatch.setattr(sys, "stdin", io.StringIO("first line\n\nsecond line\n"))
    code, _, err = _main(capsys, "encode", "--url", server.http_url, "--model", DEFAULT_NAME, "-o", str(out))
    assert code == 0, err
    assert np.load(out).shape == (2, 384)


def test_the_installed_command_reports_an_unreachable_server_clearly():
    """The entry point as installed (pyproject's console script): exit 1 and one line, no traceback."""
    (port,) = free_ports(1)
    command = Path(sys.executable).with_name("bertserve")
    result = subprocess.run([str(command), "encode", "hello", "--url", f"localhost:{port}", "--timeout", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"could not reach a Triton server at grpc://localhost:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_export_refuses_an_existing_model_then_overwrite_replaces_it(tiny_bert_dir, tmp_path, capsys, caplog):
    from bertserve.export import ExportConfig, Pooling, export_model

    repo = tmp_path / "repo"
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name="plain", pooling=Pooling.CLS,
                              max_seq_len=32))
    encoder_before = _files(repo / "plain_encoder")

    caplog.set_level("INFO", logger="bertserve.export")
    caplog.clear()
    code, _, err = _main(capsys, "export", str(tiny_bert_dir), "--repository", str(repo), "--name", "plain")
    assert code == 1 and "already exists; pass --overwrite" in err
    assert not caplog.records, f"the refusal came after the export work: {caplog.messages}"

    code, out, err = _main(capsys, "export", str(tiny_bert_dir), "--repository", str(repo), "--name", "plain",
                           "--pooling", "max", "--layers=-2,-1", "--max-seq-len", "64", "--overwrite")
    assert code == 0, err
    info = json.loads(out)  # the command prints what it wrote, as bertserve.json records it
    assert (info["dim"], info["pooling"], info["layers"], info["max_seq_len"]) == (128, "max", [-2, -1], 64)
    # Neither --runtime nor --precision: the encoder this CPU runs fastest.
    assert (info["runtime"], info["precision"]) == tuple(choice.value for choice in default_encoder())
    assert json.loads((repo / "plain" / "bertserve.json").read_text()) == info
    tokenizer_config = parse((repo / "plain_tokenizer" / "config.pbtxt").read_text())
    assert tokenizer_config.parameters["max_seq_len"].string_value == "64"
    assert _files(repo / "plain_encoder") != encoder_before  # the runtime's own files: this CPU's default
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"], "staging folders were left behind"
    assert sorted(p.name for p in repo.iterdir()) == ["plain", "plain_encoder", "plain_tokenizer"]


def test_status_command_prints_the_models(server, capsys):
    code, out, err = _main(capsys, "status", "--url", server.grpc_url)
    assert code == 0, err
    assert "Triton 2.51.0" in out and f"{DEFAULT_NAME}_encoder" in out


def test_export_with_the_torch_runtime_and_tokenizer_instances(tiny_bert_dir, tmp_path, capsys):
    repo = tmp_path / "repo"
    code, out, err = _main(capsys, "export", str(tiny_bert_dir), "--repository", str(repo), "--name", "t",
                           "--runtime", "torch", "--tokenizer-instances", "3", "--max-seq-len", "32")
    assert code == 0, err
    assert json.loads(out)["runtime"] == "torch"
    assert sorted(p.name for p in (repo / "t_encoder" / "1").iterdir()) == ["model.pt", "model.py"]
    encoder = parse((repo / "t_encoder" / "config.pbtxt").read_text())
    assert encoder.parameters["runtime"].string_value == "torch"
    assert parse((repo / "t_tokenizer" / "config.pbtxt").read_text()).instance_group[0].count == 3


def test_export_for_the_native_openvino_backend(tiny_bert_dir, tmp_path, capsys):
    """--backend openvino: OpenVINO IR for the NGC image's openvino backend, requests padded to length buckets."""
    repo = tmp_path / "repo"
    code, out, err = _main(capsys, "export", str(tiny_bert_dir), "--repository", str(repo), "--name", "v",
                           "--backend", "openvino", "--precision", "auto", "--performance-hint", "latency",
                           "--max-seq-len", "64")
    assert code == 0, err
    assert (json.loads(out)["runtime"], json.loads(out)["backend"]) == ("openvino", "openvino")
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
def test_export_refuses_runtime_combinations_that_cannot_work(tiny_bert_dir, tmp_path, capsys, args, message):
    code, _, err = _main(capsys, "export", str(tiny_bert_dir), "--repository", str(tmp_path / "repo"), *args)
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("option, name", [("--api-key", "api_key"), ("--admin-key", "admin_key")])
def test_serve_refuses_a_bad_key_before_it_exports_the_default_model(tmp_path, capsys, monkeypatch, option, name):
    """On a fresh BERTSERVE_HOME, `serve` exports the default model first: a key it refuses must cost no export."""
    for variable in ("BERTSERVE_API_KEY", "BERTSERVE_ADMIN_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("BERTSERVE_HOME", str(tmp_path))
    code, out, err = _main(capsys, "serve", option, "short", "--openai-port", "0")
    assert (code, out) == (1, "")
    assert err == f"bertserve: error: {name} must be at least 16 letters, digits or '-_.~+/' characters\n"
    assert not any(tmp_path.iterdir()), "serve exported the default model before it refused the key"


def test_health_runs_each_model_with_its_own_task(server, capsys):
    code, out, err = _main(capsys, "health", "--url", server.grpc_url)
    assert code == 0, err
    for name in (DEFAULT_NAME, RERANK_NAME, CLASSIFY_NAME, SPARSE_NAME):
        assert f"bertserve: {name} serves (" in out


@pytest.mark.parametrize("size", ["0", "lots"])
def test_serve_refuses_a_cache_of_no_size_before_it_exports_the_default_model(tmp_path, capsys, monkeypatch, size):
    monkeypatch.setenv("BERTSERVE_HOME", str(tmp_path))
    code, out, err = _main(capsys, "serve", "--cache-size", size)
    assert (code, out) == (1, "")
    assert err.startswith(f"bertserve: error: --cache-size {size!r} is not a positive size")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("url", [["--url", "http://localhost:8000"], ["--url", "https://triton.example:443"],
                                 ["--url", "localhost:8000", "--protocol", "http"]], ids=["http", "https", "protocol"])
def test_frontdoor_refuses_an_http_triton_address(capsys, url):
    code, out, err = _main(capsys, "frontdoor", *url, "--openai-port", "0", "--bert-as-service-port", "0")
    assert (code, out) == (1, "")
    assert err == ("bertserve: error: the front door talks to Triton over gRPC; give its gRPC address "
                   "(e.g. localhost:8001)\n")


def _kill_the_door_once_serving(home: Path, openai_port: int, timeout: float = 120.0) -> None:
    """Kill serve's front door once serve is serving (the admin key is written after the door answers); interrupt
    serve instead if that never happens, so that the test fails rather than hangs. The door is told by its port:
    doors that other tests' fixtures started are children of this process too."""
    deadline, port = time.monotonic() + timeout, f"--openai-port {openai_port}"
    while time.monotonic() < deadline:
        if (home / "admin-key").exists():
            doors = [child for child in psutil.Process().children()
                     if "bertserve.frontdoor" in child.cmdline() and port in " ".join(child.cmdline())]
            if doors:
                doors[0].kill()
                return
        time.sleep(0.1)
    _thread.interrupt_main()


@pytest.mark.server
def test_serve_exits_1_and_stops_triton_when_the_front_door_dies(tmp_path, capsys, monkeypatch):
    """An empty repository: a real tritonserver that starts in seconds, and a real front door to kill."""
    for variable in ("BERTSERVE_API_KEY", "BERTSERVE_ADMIN_KEY"):
        monkeypatch.delenv(variable, raising=False)
    home, repository = tmp_path / "home", tmp_path / "repository"
    repository.mkdir()
    monkeypatch.setenv("BERTSERVE_HOME", str(home))
    http, grpc, metrics, openai_port = ports = free_ports(4)
    killer = threading.Thread(target=_kill_the_door_once_serving, args=(home, openai_port), daemon=True)
    sigterm = signal.getsignal(signal.SIGTERM)  # serve installs its own
    before = set(psutil.Process().children(recursive=True))  # the session's servers, if started
    killer.start()
    try:
        code, out, err = _main(capsys, "serve", "-r", str(repository), "--host", "127.0.0.1", "--http-port", str(http),
                               "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--openai-port",
                               str(openai_port))
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        killer.join()
    assert out.startswith(f"bertserve: ready, serving {repository}\n")
    assert code == 1 and "bertserve: error: the front door exited unexpectedly" in err, err
    assert not set(psutil.Process().children(recursive=True)) - before, "serve left a process behind"
    assert all(port_free(port) for port in ports), "a port is still taken after serve exited"
