"""Build a TensorRT engine from the exported ONNX encoder (needs the `tensorrt` package and an NVIDIA GPU)."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

from bertserve import contract
from bertserve.errors import ExportError
from bertserve.model_repository.repository import tensorrt_batch_sizes

from .encoder import INPUT_NAMES

_log = logging.getLogger("bertserve.export")
_WORKSPACE_BYTES = 4 << 30


def cuda_devices() -> int:
    """How many NVIDIA GPUs the CUDA driver reports (0 without a driver).

    Asked of the driver itself (libcuda), not torch: a CPU build of torch
    reports no GPU even on a machine that has one.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def tensorrt_unavailable() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install tensorrt)"
    if cuda_devices() == 0:
        return "the CUDA driver (libcuda.so.1) reports no NVIDIA GPU"
    return None


def require_tensorrt() -> None:
    """Raise a clear `ExportError` unless a TensorRT engine can be built here."""
    reason = tensorrt_unavailable()
    if reason:
        raise ExportError(
            f"--format tensorrt needs the tensorrt package and an NVIDIA GPU, but {reason}; "
            "export ONNX instead (--backend onnxruntime, optionally --tensorrt-accelerator)"
        )


def build_engine(onnx_file: Path, plan_file: Path, max_batch_size: int, max_seq_len: int, fp16: bool) -> Path:
    """Compile `onnx_file` into `plan_file` with one optimisation profile per length bucket.

    The tokenizer pads each request to a bucket (`contract.length_buckets`), so
    each profile covers the lengths above the bucket below it up to its own, and
    is tuned for exactly that length at the batch sizes the batcher prefers.

    The engine is tied to the GPU model and TensorRT version it is built with:
    build it with the TensorRT of the Triton image that will serve it.
    """
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_file.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the ONNX encoder: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_batch = tensorrt_batch_sizes(max_batch_size)[0]
    buckets = contract.length_buckets(max_seq_len)
    for shortest, length in zip((1,) + tuple(b + 1 for b in buckets), buckets):
        profile = builder.create_optimization_profile()
        for name in INPUT_NAMES:
            profile.set_shape(name, (1, shortest), (opt_batch, length), (max_batch_size, length))
        config.add_optimization_profile(profile)
    _log.info("building the TensorRT engine (batch up to %d, profiles for lengths %s, fp16=%s); this takes minutes",
              max_batch_size, list(buckets), fp16)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build the engine; its log above says why")
    plan_file.write_bytes(bytes(engine))
    return plan_file
