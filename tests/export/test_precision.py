"""fp16 export: vectors within cosine 0.999 of fp32, pooling tail and outputs kept in fp32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

from bertserve.export import ExportConfig, Precision, export_model

from ..corpus import sentences


def _run(repository, name, texts):
    tokenizer = Tokenizer.from_file(str(repository / f"{name}_tokenizer" / "1" / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    path = repository / f"{name}_encoder" / "1" / "model.onnx"
    return ort.InferenceSession(str(path)).run(["embedding"], feed)[0], path


def test_fp16_vectors_match_fp32(minilm_dir, tmp_path):
    repo = tmp_path / "repo"
    info16 = export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name="m16", precision=Precision.FP16))
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name="m32"))
    texts = sentences(240)
    v16, path16 = _run(repo, "m16", texts)
    v32, path32 = _run(repo, "m32", texts)
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


def test_int8_vectors_stay_close_to_fp32(minilm_dir, tmp_path):
    repo = tmp_path / "repo"
    info = export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name="q", precision=Precision.INT8))
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name="f"))
    texts = sentences(240)
    (v8, path8), (v32, path32) = _run(repo, "q", texts), _run(repo, "f", texts)
    cosine = (v8 * v32).sum(axis=1)  # both L2-normalised by the model
    assert info.precision == "int8"
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95
    ops = [node.op_type for node in onnx.load(str(path8)).graph.node]
    # 5 of 6 weight matrices per layer run as int8; the FFN down-projections stay fp32 (see export/encoder.py).
    assert ops.count("MatMulInteger") == 6 * 5 and "MatMulInteger" not in [
        n.op_type for n in onnx.load(str(path32)).graph.node]
