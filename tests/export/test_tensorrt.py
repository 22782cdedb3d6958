"""TensorRT engines: built where tensorrt and a GPU exist, a clear refusal elsewhere."""

from __future__ import annotations

import re

import pytest

from bertserve.errors import ExportError
from bertserve.export import Backend, Deployment, ExportConfig, Precision, export_model
from bertserve.export.tensorrt import tensorrt_unavailable

REASON = tensorrt_unavailable()


@pytest.mark.skipif(REASON is None, reason="tensorrt and a GPU are present: the refusal cannot happen here")
def test_refused_with_the_reason_and_the_alternative(minilm_dir, tmp_path):
    with pytest.raises(ExportError, match=re.escape(f"needs the tensorrt package and an NVIDIA GPU, but {REASON}; export ONNX instead (--backend onnxruntime")):
        export_model(ExportConfig(model_dir=minilm_dir, repository=tmp_path, deployment=Deployment(Backend.TENSORRT)))
    assert not any(tmp_path.iterdir()), "nothing is written when the engine cannot be built"


@pytest.mark.skipif(REASON is not None, reason=f"TensorRT engine build needs tensorrt and a GPU: {REASON}")
def test_engine_is_built_for_the_tensorrt_backend(minilm_dir, tmp_path):
    info = export_model(ExportConfig(model_dir=minilm_dir, repository=tmp_path, name="trt", max_seq_len=128,
                                     precision=Precision.FP16, deployment=Deployment(Backend.TENSORRT)))
    assert info.backend == "tensorrt"
    assert (tmp_path / "trt_encoder" / "1" / "model.plan").stat().st_size > 0
