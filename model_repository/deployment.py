"""How the encoder is served: which Triton backend runs it, how many instances, on which GPUs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from bertserve import contract
from bertserve.errors import ConfigError


class Backend(str, Enum):
    """The Triton backend that runs the encoder."""

    PYTHON = "python"  # Python backend (ONNX Runtime, OpenVINO or PyTorch, see Runtime): runs in the embedded server
    ONNXRUNTIME = "onnxruntime"  # native onnxruntime_onnx backend of the NGC Triton image
    TENSORRT = "tensorrt"  # native tensorrt_plan backend, with an engine built at export time
    OPENVINO = "openvino"  # native openvino backend of the NGC Triton image, on the OpenVINO IR

    @property
    def platform(self) -> str | None:
        """Triton `platform` of the encoder, or None for the Python backend."""
        return {Backend.ONNXRUNTIME: "onnxruntime_onnx", Backend.TENSORRT: "tensorrt_plan"}.get(self)

    @property
    def native(self) -> bool:
        """Whether Triton runs the encoder itself, batching only requests of equal shape."""
        return self is not Backend.PYTHON


class Runtime(str, Enum):
    """What runs the encoder inside the Python backend (the native openvino backend runs OPENVINO's files)."""

    ONNXRUNTIME = "onnxruntime"  # model.onnx on ONNX Runtime: CPUs, or GPUs with onnxruntime-gpu
    OPENVINO = "openvino"  # model.xml + model.bin, OpenVINO IR: CPUs, bf16 on AMX / AVX512-BF16, static int8
    TORCH = "torch"  # model.pt, TorchScript on PyTorch: CUDA GPUs (fp16, scaled dot-product attention)


class PerformanceHint(str, Enum):
    """OpenVINO's CPU tuning: one stream using every core, or one stream per core with the batch split over them."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


# Backends the embedded server (nvidia-pytriton's tritonserver) ships.
EMBEDDED_BACKENDS = frozenset({"python", "ensemble"})


@dataclass(frozen=True)
class Deployment:
    """Encoder placement, as bert-as-service's num_worker / device_map.

    `instances` encoder instances run on each GPU in `gpus`; with no GPUs
    listed they run on a GPU when Triton finds one, else on the CPU
    (TensorRT engines always need a GPU).
    """

    backend: Backend = Backend.PYTHON
    runtime: Runtime = Runtime.ONNXRUNTIME  # Python backend; the openvino backend implies OPENVINO
    # Two of each by default, though one core could feed one: with a queue bound (below) Triton 2.51's dynamic
    # batcher cannot prefetch, and a request that arrives while a lone instance finishes its last batch can miss
    # its wake-up and wait out the batcher's 500 ms timer (measured: 1 request in 20 to the encoder, 1 in 100
    # through the ensemble, one client sending one sentence at a time). With two, one is always free for a lone
    # client, and under load each new request wakes the batcher. The instances share the CPU's cores.
    instances: int = 2
    # Tokenizer instances on the CPU: a GPU encoder outruns one.
    tokenizer_instances: int = 2
    gpus: tuple[int, ...] = ()
    tensorrt_accelerator: bool = False  # ONNX Runtime only: let its TensorRT provider run the graph
    # Python backend only: rows of a batch run in length groups padded to at most this many
    # computed tokens per real token (a large value runs each batch as one padded block).
    max_padding_ratio: float = 1.2
    # OpenVINO only: how the CPU's cores are used for each batch.
    performance_hint: PerformanceHint = PerformanceHint.THROUGHPUT
    # Backpressure, per model (tokenizer and encoder): requests beyond this many waiting, or waiting longer
    # than queue_timeout seconds, are turned away at once as "busy"; the SDK retries them with backoff.
    # 0 turns either bound off.
    max_queue_size: int = contract.DEFAULT_MAX_QUEUE_SIZE
    queue_timeout: float = contract.DEFAULT_QUEUE_TIMEOUT
    # The most bytes of text one request may carry; the tokenizer refuses more (HTTP 400), naming the limit.
    max_request_bytes: int = contract.DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self) -> None:
        if self.instances < 1 or self.tokenizer_instances < 1:
            raise ConfigError(f"instances must be at least 1, got {min(self.instances, self.tokenizer_instances)}")
        if self.runtime is Runtime.TORCH and self.backend is not Backend.PYTHON:
            raise ConfigError("the torch runtime runs in the Python backend only")
        if self.backend is Backend.OPENVINO and self.runtime is not Runtime.OPENVINO:
            raise ConfigError("the openvino backend runs OpenVINO IR: set runtime openvino")
        if self.runtime is Runtime.OPENVINO and self.backend not in (Backend.PYTHON, Backend.OPENVINO):
            raise ConfigError("the openvino runtime runs in the python or openvino backend")
        if any(gpu < 0 for gpu in self.gpus):
            raise ConfigError(f"GPU ids are 0 or more, got {list(self.gpus)}")
        if self.tensorrt_accelerator and self.backend is not Backend.ONNXRUNTIME:
            raise ConfigError("the TensorRT accelerator applies to the onnxruntime backend only")
        if self.max_padding_ratio < 1:
            raise ConfigError(f"max_padding_ratio is at least 1 (no padding), got {self.max_padding_ratio}")
        if self.max_queue_size < 0 or self.queue_timeout < 0:
            raise ConfigError("max_queue_size and queue_timeout are 0 (no bound) or more")
        if self.max_request_bytes < 1:
            raise ConfigError(f"max_request_bytes must be at least 1, got {self.max_request_bytes}")

    @property
    def encoder_files(self) -> tuple[str, ...]:
        """The encoder's file names in its model version folder, the one its runtime opens first."""
        if self.backend is Backend.TENSORRT:
            return ("model.plan",)
        return {Runtime.TORCH: ("model.pt",), Runtime.OPENVINO: ("model.xml", "model.bin")}.get(self.runtime, ("model.onnx",))

    @property
    def instance_kind(self) -> str:
        return "KIND_GPU" if self.gpus or self.backend is Backend.TENSORRT else "KIND_AUTO"
