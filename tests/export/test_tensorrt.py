"""TensorRT engines: built and checked against fp32 where tensorrt and a GPU exist, a clear refusal elsewhere."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from bertserve.errors import ExportError
from bertserve.export import Backend, Deployment, ExportConfig, Precision
from bertserve.export.tokenizer import encoder_inputs

from ..conftest import DEFAULT_NAME
from ..corpus import sentences

pytestmark = pytest.mark.server  # every test here imports the exporter, and with it torch


@pytest.fixture(scope="module")
def reason() -> str | None:
    """Why no TensorRT engine can be built here, or None where tensorrt and a GPU are present."""
    from bertserve.export.tensorrt import tensorrt_unavailable

    return tensorrt_unavailable()


def test_gpu_count_comes_from_the_driver_not_torch():
    """What nvidia-smi lists is what the export sees, whichever torch build is installed."""
    from bertserve.export.tensorrt import cuda_devices

    smi = shutil.which("nvidia-smi")
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout if smi else ""
    assert cuda_devices() == len(re.findall(r"^GPU \d+:", listed, re.MULTILINE))


def test_refused_with_the_reason_and_the_alternative(export_model, reason, minilm_dir, tmp_path):
    if reason is None:
        pytest.skip("tensorrt and a GPU are present: the refusal cannot happen here")
    with pytest.raises(ExportError, match=re.escape(f"needs the tensorrt package and an NVIDIA GPU, but {reason}; export ONNX instead (--backend onnxruntime")):
        export_model(ExportConfig(model_dir=minilm_dir, repository=tmp_path, deployment=Deployment(Backend.TENSORRT)))
    assert not any(tmp_path.iterdir()), "nothing is written when the engine cannot be built"


def test_engine_vectors_match_fp32(export_model, reason, minilm_dir, repository, tmp_path):
    if reason is not None:
        pytest.skip(f"TensorRT engine build needs tensorrt and a GPU: {reason}")
    info = export_model(ExportConfig(model_dir=minilm_dir, repository=tmp_path, name="trt", max_seq_len=128,
                                     precision=Precision.FP16, deployment=Deployment(Backend.TENSORRT)))
    assert info.backend == "tensorrt"
    tokenizer = Tokenizer.from_file(str(tmp_path / "trt_tokenizer" / "1" / "tokenizer.json"))
    fp32 = ort.InferenceSession(str(repository / f"{DEFAULT_NAME}_encoder" / "1" / "model.onnx"))
    texts = sentences(240)
    for start in range(0, len(texts), info.max_batch_size):
        feeds = encoder_inputs(tokenizer, texts[start : start + info.max_batch_size])
        got = _run_engine(tmp_path / "trt_encoder" / "1" / "model.plan", feeds)
        want = fp32.run(["embedding"], feeds)[0]
        cosine = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cosine.min() >= 0.999, (start, cosine.min())


def _run_engine(plan: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run a TensorRT engine once, with device memory from the CUDA driver API (no torch or cuda-python needed)."""
    import tensorrt as trt

    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    cuda.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
    cuda.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
    cuda.cuMemFree_v2.argtypes = [ctypes.c_uint64]

    def check(status: int) -> None:
        assert status == 0, f"CUDA driver error {status}"

    device, context = ctypes.c_int(), ctypes.c_void_p()
    check(cuda.cuInit(0))
    check(cuda.cuDeviceGet(ctypes.byref(device), 0))
    check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device))
    check(cuda.cuCtxSetCurrent(context))
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    execution = engine.create_execution_context()
    pointers = []

    def device_buffer(nbytes: int) -> int:
        pointer = ctypes.c_uint64()
        check(cuda.cuMemAlloc_v2(ctypes.byref(pointer), nbytes))
        pointers.append(pointer.value)
        return pointer.value

    try:
        for name, array in feeds.items():
            array = np.ascontiguousarray(array, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            execution.set_input_shape(name, array.shape)
            pointer = device_buffer(array.nbytes)
            check(cuda.cuMemcpyHtoD_v2(pointer, array.ctypes.data, array.nbytes))
            execution.set_tensor_address(name, pointer)
        out = np.empty(tuple(execution.get_tensor_shape("embedding")), dtype=np.float32)
        out_pointer = device_buffer(out.nbytes)
        execution.set_tensor_address("embedding", out_pointer)
        assert execution.execute_async_v3(0)  # the default stream
        check(cuda.cuCtxSynchronize())
        check(cuda.cuMemcpyDtoH_v2(out.ctypes.data, out_pointer, out.nbytes))
        return out
    finally:
        for pointer in pointers:
            cuda.cuMemFree_v2(pointer)
        cuda.cuDevicePrimaryCtxRelease(device)
