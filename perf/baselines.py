"""What users would run instead: sentence-transformers in-process, ONNX Runtime in-process, infinity-emb."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

from bertserve.export.tokenizer import encoder_inputs

INFINITY = Path(__file__).resolve().parent.parent / ".tools" / "infinity" / "bin" / "infinity_emb"


class SentenceTransformersBaseline:
    """`SentenceTransformer.encode` in the caller's process, fp32 on the CPU."""

    name = "sentence-transformers (in-process)"

    def __init__(self, model_dir: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device="cpu")

    def encoder(self, batch: list[str]) -> Callable[[], int]:
        return lambda: len(self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True,
                                             show_progress_bar=False))


class OnnxRuntimeBaseline:
    """The exported ONNX graph run with ONNX Runtime in the caller's process, tokenised with `tokenizers`."""

    name = "ONNX Runtime (in-process, same graph)"

    def __init__(self, encoder_dir: Path, tokenizer_file: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.session = ort.InferenceSession(str(encoder_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_padding()

    def encoder(self, batch: list[str]) -> Callable[[], int]:
        def call() -> int:
            return len(self.session.run(["embedding"], encoder_inputs(self.tokenizer, batch))[0])

        return call


class InfinityServer:
    """infinity-emb serving the same model folder over HTTP (`--engine torch --device cpu`), in its own venv."""

    name = "infinity-emb (server, torch)"

    def __init__(self, model_dir: Path, port: int) -> None:
        if not INFINITY.is_file():
            raise FileNotFoundError(f"infinity-emb not found at {INFINITY}; run `make perf-tools`")
        self.model_id = str(model_dir)
        self.port = port
        self._process: subprocess.Popen | None = None
        self._local = threading.local()

    def __enter__(self) -> InfinityServer:
        """Start loading in the background; `wait_ready` before measuring."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        self._process = subprocess.Popen(
            [str(INFINITY), "v2", "--model-id", self.model_id, "--engine", "torch", "--device", "cpu",
             "--port", str(self.port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        if self._process is None:
            raise RuntimeError("infinity-emb is not started; use InfinityServer as a context manager")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"infinity-emb exited with {self._process.returncode} while starting")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"infinity-emb was not healthy after {timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)

    def encoder(self, batch: list[str]) -> Callable[[], int]:
        body = json.dumps({"model": self.model_id, "input": batch})

        def call() -> int:
            # One keep-alive connection per client thread; the server closes idle ones, so reconnect once.
            for attempt in (1, 2):
                connection = getattr(self._local, "connection", None)
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                    self._local.connection = connection
                try:
                    connection.request("POST", "/embeddings", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    payload = json.loads(response.read())
                    break
                except (http.client.HTTPException, ConnectionError):
                    connection.close()
                    self._local.connection = None
                    if attempt == 2:
                        raise
            if response.status != 200:
                raise RuntimeError(f"infinity-emb answered {response.status}: {payload}")
            return len(payload["data"])

        return call
