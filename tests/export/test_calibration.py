"""int8 / uint8 calibration at export: a pooled embed model records each dimension's range over the varied corpus,
as its exported graph computes the corpus in the precision it is served in; token-level models record none.

The model is the tiny BERT of tests/conftest.py (`tiny_bert_dir`, mean pooling over layer -2), run in
process as the Python backend runs it: ONNX Runtime, OpenVINO, TorchScript. Other tasks: tests/export/test_tasks.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from bertserve import contract
from bertserve.export import Deployment, ExportConfig, Pooling, Precision, Runtime
from bertserve.quantize import calibration_ranges

pytestmark = pytest.mark.server  # every test here exports real weights

# (runtime, precision): every runtime's fp32, and int8 where it computes other vectors (ONNX Runtime's dynamic
# quantisation; OpenVINO's static one, whose export already runs the corpus to judge it).
CASES = [(Runtime.ONNXRUNTIME, Precision.FP32), (Runtime.ONNXRUNTIME, Precision.INT8),
         (Runtime.OPENVINO, Precision.FP32), (Runtime.OPENVINO, Precision.INT8), (Runtime.TORCH, Precision.FP32)]


def _corpus_vectors(repo: Path, name: str, runtime: Runtime, precision: Precision) -> np.ndarray:
    """The written encoder's vectors of the varied corpus, in the batches the export runs it in, computed as its
    runtime serves them."""
    from bertserve.export.encoder import _corpus_batches

    batches = _corpus_batches(Tokenizer.from_file(str(repo / f"{name}_tokenizer" / "1" / "tokenizer.json")))
    version = repo / f"{name}_encoder" / "1"
    if runtime is Runtime.ONNXRUNTIME:
        import onnxruntime as ort

        session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(["embedding"], batch)[0] for batch in batches])
    if runtime is Runtime.OPENVINO:
        from bertserve.export.openvino import run_ir
        from bertserve.model_repository.backends.openvino import computed_precision
        from bertserve.model_repository.repository import openvino_precision

        return np.concatenate(run_ir(version / "model.xml", batches,
                                     computed_precision(openvino_precision(precision.value))))
    import torch

    module = torch.jit.load(str(version / "model.pt"))
    with torch.inference_mode():
        return np.concatenate([module(*(torch.from_numpy(batch[tensor]) for tensor in contract.TOKEN_TENSORS)).numpy()
                               for batch in batches])


@pytest.mark.parametrize("runtime, precision", CASES, ids=lambda case: case.value)
def test_ranges_are_the_served_graphs_over_the_varied_corpus(export_model, tiny_bert_dir, tmp_path, runtime, precision):
    info = export_model(ExportConfig(model_dir=tiny_bert_dir, repository=tmp_path, name="m", precision=precision,
                                     deployment=Deployment(runtime=runtime)))
    vectors = _corpus_vectors(tmp_path, "m", runtime, precision)
    assert vectors.shape == (240, info.dim)
    assert info.quantization_ranges == calibration_ranges(vectors)
    low, high = (np.asarray(row) for row in info.quantization_ranges)
    assert (low < high).all()
    # Recorded with the model, exactly: the same text always gets the same codes.
    recorded = json.loads((tmp_path / "m" / "bertserve.json").read_text())["quantization_ranges"]
    assert tuple(tuple(row) for row in recorded) == info.quantization_ranges


def test_token_level_models_record_no_ranges(export_model, tiny_bert_dir, tmp_path):
    info = export_model(ExportConfig(model_dir=tiny_bert_dir, repository=tmp_path, name="tokens", pooling=Pooling.NONE))
    assert info.token_level and info.quantization_ranges == ()
    assert json.loads((tmp_path / "tokens" / "bertserve.json").read_text())["quantization_ranges"] == []
