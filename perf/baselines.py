"""What users would run instead: sentence-transformers, ONNX Runtime, OpenVINO and fastembed in-process; infinity-emb."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from bertserve import contract

from .keepalive import KeepAliveClient

INFINITY = Path(__file__).resolve().parent.parent / ".tools" / "infinity" / "bin" / "infinity_emb"


class _InProcess:
    """A baseline run in the caller's process: `encode` a batch; `encoder` is the call the timing loops make."""

    def encode(self, batch: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encoder(self, batch: list[str]) -> Callable[[], int]:
        return lambda: len(self.encode(batch))


def _padded_tokenizer(tokenizer_file: Path):
    """The export's own tokenizer, padding each batch to its longest sentence."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_padding()
    return tokenizer


class SentenceTransformersBaseline(_InProcess):
    """`SentenceTransformer.encode` in the caller's process on the CPU: fp32, or under bf16 autocast."""

    def __init__(self, model_dir: Path, bf16_autocast: bool = False) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.bf16_autocast = bf16_autocast
        self.name = "sentence-transformers (in-process" + (", bf16 autocast)" if bf16_autocast else ")")

    def encode(self, batch: list[str]) -> np.ndarray:
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16_autocast):
            return self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)


class OnnxRuntimeBaseline(_InProcess):
    """The exported ONNX graph run with ONNX Runtime in the caller's process, tokenised with `tokenizers`."""

    name = "ONNX Runtime (in-process, same graph)"

    def __init__(self, encoder_dir: Path, tokenizer_file: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(encoder_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        self.tokenizer = _padded_tokenizer(tokenizer_file)

    def encode(self, batch: list[str]) -> np.ndarray:
        from bertserve.export.tokenizer import encoder_inputs  # the exporter package imports torch

        return self.session.run([contract.EMBEDDING], encoder_inputs(self.tokenizer, batch))[0]


class OpenVinoBaseline(_InProcess):
    """The OpenVINO IR the service runs (`<name>_encoder/1/model.xml`), compiled as the service compiles it, in the
    caller's process.

    Precision auto (bf16 where the CPU has bf16 units, f32 elsewhere); tokenised and fed as `OnnxRuntimeBaseline`.
    Under the throughput hint a batch is split over the compiled model's parallel infer requests (one per
    stream), as a caller must do to use every stream.
    """

    def __init__(self, encoder_dir: Path, tokenizer_file: Path, hint: str = "LATENCY") -> None:
        import openvino

        from bertserve.model_repository.backends.openvino import compile_encoder

        self.compiled = compile_encoder(encoder_dir / "1" / "model.xml", "auto", hint)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = openvino.AsyncInferQueue(self.compiled, self.streams)
        self.tokenizer = _padded_tokenizer(tokenizer_file)
        self.hint = hint.lower()
        self.name = f"OpenVINO (in-process, same graph, {self.hint} hint, {self.precision})"

    def encode(self, batch: list[str]) -> np.ndarray:
        from bertserve.export.tokenizer import encoder_inputs  # the exporter package imports torch

        feeds = encoder_inputs(self.tokenizer, batch)
        bounds = np.linspace(0, len(batch), min(self.streams, len(batch)) + 1).astype(int)
        outputs: list = [None] * (len(bounds) - 1)

        def done(request, index: int) -> None:
            outputs[index] = request.get_tensor(contract.EMBEDDING).data.copy()

        self.queue.set_callback(done)
        for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            self.queue.start_async({name: feed[start:end] for name, feed in feeds.items()}, index)
        self.queue.wait_all()
        return np.concatenate(outputs)


FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# What fastembed reads from a local model folder besides model.onnx.
_FASTEMBED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def fastembed_folder(model_dir: Path, folder: Path) -> Path:
    """A folder in the layout of fastembed's all-MiniLM-L6-v2 download, made from the local weights.

    model.onnx is transformers' BertModel exported with ONNX opset 17: inputs input_ids, attention_mask and
    token_type_ids, output last_hidden_state, batch and sequence dynamic; fastembed pools and normalises.
    Sentences are truncated at 256 tokens, as sentence-transformers and fastembed's own download do.
    """
    if (folder / "model.onnx").is_file():
        return folder
    import torch
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    folder.mkdir(parents=True, exist_ok=True)
    inputs = contract.TOKEN_TENSORS
    example = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*inputs, "last_hidden_state")}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracing notices
        torch.onnx.export(LastHiddenState(), example, str(folder / "model.onnx"), input_names=list(inputs),
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    for name in _FASTEMBED_FILES:
        shutil.copyfile(model_dir / name, folder / name)
    # fastembed truncates at the tokenizer's model_max_length; the model's is sentence-transformers' 256 tokens.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


class FastEmbedBaseline(_InProcess):
    """fastembed's `TextEmbedding` in the caller's process: ONNX Runtime, its own tokenisation and mean pooling."""

    name = "fastembed (in-process, ONNX Runtime)"

    def __init__(self, model_dir: Path, folder: Path) -> None:
        from fastembed import TextEmbedding

        fastembed_folder(model_dir, folder)
        self.model = TextEmbedding(model_name=FASTEMBED_MODEL, specific_model_path=str(folder), cache_dir=str(folder))

    def encode(self, batch: list[str]) -> np.ndarray:
        return np.stack(list(self.model.embed(batch, batch_size=len(batch))))


class InfinityServer:
    """infinity-emb serving the same model folder over HTTP (`--engine torch --device cpu`), in its own venv.

    Its own warm-up at startup is off: the bench's timing loop warms every system alike, and infinity's would
    spend the cores tritonserver is starting on at the same time."""

    name = "infinity-emb (server, torch)"

    def __init__(self, model_dir: Path, port: int) -> None:
        if not INFINITY.is_file():
            raise FileNotFoundError(f"infinity-emb not found at {INFINITY}; run `make perf-tools`")
        self.model_id = str(model_dir)
        self.port = port
        self._process: subprocess.Popen | None = None
        self._http = KeepAliveClient("127.0.0.1", port)

    def __enter__(self) -> InfinityServer:
        """Start loading in the background; `wait_ready` before measuring."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        self._process = subprocess.Popen(
            [str(INFINITY), "v2", "--model-id", self.model_id, "--engine", "torch", "--device", "cpu",
             "--port", str(self.port), "--host", "127.0.0.1", "--no-model-warmup"],
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
        body = json.dumps({"model": self.model_id, "input": batch}).encode()

        def call() -> int:
            status, answer = self._http.post("/embeddings", body)
            if status != 200:
                raise RuntimeError(f"infinity-emb answered {status}: {answer[:200]!r}")
            return len(json.loads(answer)["data"])

        return call
