"""Reduced precision against the session's fp32 export: fp16 within cosine 0.999 with an fp32 pooling tail; int8."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from bertserve.export import ExportConfig, Precision
from bertserve.export.tokenizer import encoder_inputs

from ..conftest import DEFAULT_NAME
from ..corpus import sentences

TEXTS = sentences(240)
pytestmark = pytest.mark.server  # every test here exports real weights


def _run(repository, name, texts):
    """The model's vectors for `texts`, run as the server runs them: in batches of similar length."""
    tokenizer = Tokenizer.from_file(str(repository / f"{name}_tokenizer" / "1" / "tokenizer.json"))
    path = repository / f"{name}_encoder" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path))
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer.encode(texts[i]).ids))
    vectors = [None] * len(texts)
    for start in range(0, len(order), 16):
        chunk = order[start : start + 16]
        for i, vector in zip(chunk, session.run(["embedding"], encoder_inputs(tokenizer, [texts[i] for i in chunk]))[0]):
            vectors[i] = vector
    return np.stack(vectors), path


@pytest.fixture(scope="module")
def fp32(repository):
    """The session's fp32 export of the default model: its vectors for TEXTS, and its graph file."""
    return _run(repository, DEFAULT_NAME, TEXTS)


def test_fp16_vectors_match_fp32(export_model, minilm_dir, fp32, tmp_path):
    repo = tmp_path / "repo"
    info16 = export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name="m16", precision=Precision.FP16))
    v16, path16 = _run(repo, "m16", TEXTS)
    v32, path32 = fp32
    assert info16.precision == "fp16"
    assert v16.dtype == np.float32 and v16.shape == v32.shape == (240, 384)
    cosine = (v16 * v32).sum(axis=1) / np.linalg.norm(v16, axis=1) / np.linalg.norm(v32, axis=1)
    assert cosine.min() >= 0.999
    # Half-size weights, and every tensor the pooling head reads or writes is fp32.
    assert path16.stat().st_size < 0.6 * path32.stat().st_size
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path16))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    head = [n for n in graph.node if n.name.startswith("/head/")]
    assert head
    head_types = {types.get(name) for n in head for name in [*n.input, *n.output]}
    assert onnx.TensorProto.FLOAT in head_types and onnx.TensorProto.FLOAT16 not in head_types
    assert {types.get(name) for n in graph.node if n.op_type == "MatMul" for name in n.output} == {onnx.TensorProto.FLOAT16}


def test_int8_vectors_stay_close_to_fp32(fp32, variants_repository):
    (v8, path8), (v32, path32) = _run(variants_repository, "int8", TEXTS), fp32
    cosine = (v8 * v32).sum(axis=1)  # both L2-normalised by the model
    info = json.loads((variants_repository / "int8" / "bertserve.json").read_text())
    assert info["precision"] == "int8"
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95
    ops = [node.op_type for node in onnx.load(str(path8)).graph.node]
    # 5 of 6 weight matrices per layer run as int8; the FFN down-projections stay fp32 (see export/encoder.py).
    assert ops.count("MatMulInteger") == 6 * 5 and "MatMulInteger" not in [
        n.op_type for n in onnx.load(str(path32)).graph.node]
