"""The OpenVINO runtime's exports against fp32: auto (bf16 on bf16 units), bf16, and static int8 (NNCF)."""

from __future__ import annotations

import json
import re

import numpy as np
import openvino as ov
import pytest
from tokenizers import Tokenizer

from bertserve.errors import ExportError
from bertserve.export import Deployment, ExportConfig, Precision, Runtime
from bertserve.export.tokenizer import encoder_inputs
from bertserve.model_repository.backends.openvino import (
    HEAD_PREFIX, KEEP_FP32, compile_encoder, cpu_has_bf16, read_encoder,
)
from perf.bench import OPENVINO, OPENVINO_INT8

from ..conftest import DEFAULT_NAME
from ..corpus import sentences

TEXTS = sentences(240)
OPENVINO_RUNTIME = Deployment(runtime=Runtime.OPENVINO)
pytestmark = pytest.mark.server  # every test here imports the exporter, and with it torch


def _batches(repository, name):
    """TEXTS in batches of 16 of similar length, as the server runs them, and the order they were put in."""
    tokenizer = Tokenizer.from_file(str(repository / f"{name}_tokenizer" / "1" / "tokenizer.json"))
    order = sorted(range(len(TEXTS)), key=lambda i: len(tokenizer.encode(TEXTS[i]).ids))
    chunks = [order[start : start + 16] for start in range(0, len(order), 16)]
    return [encoder_inputs(tokenizer, [TEXTS[i] for i in chunk]) for chunk in chunks], order


def _vectors(repository, name, run):
    batches, order = _batches(repository, name)
    vectors = np.empty((len(TEXTS), 384), np.float32)
    vectors[order] = np.concatenate(run(batches))
    return vectors


@pytest.fixture(scope="module")
def fp32(variants_repository):
    """The ONNX fp32 export's vectors for TEXTS, on ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(variants_repository / f"{DEFAULT_NAME}_encoder" / "1" / "model.onnx"))
    return _vectors(variants_repository, DEFAULT_NAME, lambda batches: [session.run(["embedding"], b)[0] for b in batches])


def _ir(repository, name):
    return repository / f"{name}_encoder" / "1" / "model.xml"


def test_auto_runs_fp32_here_or_bf16_on_bf16_units(variants_repository, fp32):
    from bertserve.export.openvino import run_ir

    info = json.loads((variants_repository / OPENVINO / "bertserve.json").read_text())
    assert (info["precision"], info["runtime"]) == ("auto", "openvino")
    got = _vectors(variants_repository, OPENVINO, lambda batches: run_ir(_ir(variants_repository, OPENVINO), batches, "auto"))
    if cpu_has_bf16():
        assert (got * fp32).sum(axis=1).min() >= 0.999
    else:
        assert np.abs(got - fp32).max() <= 1e-4
    # The pooling head, and only it, is marked to stay fp32 when OpenVINO lowers the rest to bf16 ...
    model = read_encoder(_ir(variants_repository, OPENVINO))
    marked = {op.get_friendly_name() for op in model.get_ops() if KEEP_FP32 in op.get_rt_info()}
    head = {op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name().startswith(HEAD_PREFIX)}
    assert head and marked == head
    # ... and runs in fp32 once compiled (which only a CPU with bf16 units can show otherwise).
    runtime = compile_encoder(model, "auto").get_runtime_model()
    compiled_head = [op for op in runtime.get_ops() if op.get_friendly_name().startswith(HEAD_PREFIX)]
    assert compiled_head and "bf16" not in {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled_head}


def test_static_int8_is_calibrated_and_stays_close_to_fp32(variants_repository, fp32):
    from bertserve.export.openvino import run_ir

    ir = _ir(variants_repository, OPENVINO_INT8)
    got = _vectors(variants_repository, OPENVINO_INT8, lambda batches: run_ir(ir, batches))
    cosine = (got * fp32).sum(axis=1)  # both L2-normalised by the model
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95
    # Calibrated: activation ranges are constants in the graph, and the feed-forward down-projections stay fp32.
    model = ov.Core().read_model(ir)
    quantized = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"}
    assert len(quantized) >= 6 * 5
    down = [op for op in model.get_ops() if re.fullmatch(r"/layers\.\d+/output/dense/MatMul", op.get_friendly_name())]
    assert len(down) == 6
    for op in down:
        assert op.input_value(0).get_node().get_type_name() != "FakeQuantize"


def test_bf16_export_is_checked_against_fp32(export_model, tiny_bert_dir, tmp_path, caplog):
    """Checked in emulated bf16 on every CPU, and in OpenVINO's own bf16 where the CPU has bf16 units."""
    caplog.set_level("INFO", logger="bertserve.export")
    info = export_model(ExportConfig(model_dir=tiny_bert_dir, repository=tmp_path, name="b", max_seq_len=64,
                                     precision=Precision.BF16, deployment=OPENVINO_RUNTIME))
    assert (info.precision, info.runtime) == ("bf16", "openvino")
    assert "bf16 encoder matches transformers (cosine min" in caplog.text
    config = (tmp_path / "b_encoder" / "config.pbtxt").read_text()
    assert re.search(r'key: "inference_precision"\s+value \{\s+string_value: "bf16"', config)
    assert sorted(p.name for p in (tmp_path / "b_encoder" / "1").iterdir()) == ["model.bin", "model.py", "model.xml"]


def test_int8_leaves_more_in_fp32_until_it_is_accurate_then_refuses(tiny6_bert_dir, tmp_path, caplog):
    """The int8 ladder: one quantisation per EXCLUSIONS rung, each judged by `accurate`; past the last, a refusal
    that says what to do, and no IR written."""
    from bertserve.export.config import plan_export
    from bertserve.export.encoder import export_encoder
    from bertserve.export.openvino import EXCLUSIONS, write_ir
    from bertserve.export.tokenizer import build_tokenizer

    caplog.set_level("INFO", logger="bertserve.export")
    plan = plan_export(ExportConfig(model_dir=tiny6_bert_dir, repository=tmp_path / "repo", max_seq_len=16))
    prepared = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input)
    onnx_path = tmp_path / "model.onnx"
    export_encoder(plan, prepared, onnx_path, plan.precision)
    corpus = [encoder_inputs(prepared.tokenizer, TEXTS[:4])]
    judged: list[list[np.ndarray]] = []

    def never_accurate(vectors: list[np.ndarray]) -> tuple[bool, str]:
        judged.append(vectors)
        return False, f"try {len(judged)}"

    xml_path = tmp_path / "model.xml"
    with pytest.raises(ExportError, match=re.escape(
            f"int8 misses the accuracy bar even with {EXCLUSIONS[-1][0]} in fp32 (try 3); export fp32 or "
            "--precision auto instead")):
        write_ir(onnx_path, xml_path, Precision.INT8, corpus, never_accurate)
    assert len(EXCLUSIONS) == len(judged) == 3
    assert all(len(vectors) == 1 and vectors[0].shape == (4, 32) for vectors in judged)
    tried = re.findall(r"quantising to int8 with (.+) in fp32 \((\d+) ops\)", caplog.text)
    assert [label for label, _ in tried] == [label for label, _ in EXCLUSIONS]
    kept = [int(count) for _, count in tried]
    assert 0 < kept[0] < kept[1] < kept[2], f"each rung leaves more in fp32: {kept}"
    assert not xml_path.exists() and not xml_path.with_suffix(".bin").exists()


def test_the_bf16_check_refuses_vectors_below_the_bar():
    from bertserve.export.encoder import _validate

    want = np.eye(4, dtype=np.float32)
    got = want.copy()
    _validate(got, want, Precision.BF16)
    got[0, 1] = 0.05  # cosine 0.99875 for one vector
    with pytest.raises(ExportError, match="bf16 graph's vectors reach cosine 0.998"):
        _validate(got, want, Precision.BF16)


@pytest.mark.parametrize(("precision", "runtime", "message"), [
    (Precision.FP16, Runtime.OPENVINO, "fp16 is for GPUs"),
    (Precision.BF16, Runtime.ONNXRUNTIME, "add --runtime openvino"),
    (Precision.AUTO, Runtime.ONNXRUNTIME, "add --runtime openvino"),
    (Precision.INT8, Runtime.TORCH, "--runtime torch runs fp16"),
])
def test_precisions_a_runtime_cannot_run_are_refused(export_model, minilm_dir, tmp_path, precision, runtime, message):
    with pytest.raises(ExportError, match=message):
        export_model(ExportConfig(model_dir=minilm_dir, repository=tmp_path, precision=precision,
                                  deployment=Deployment(runtime=runtime)))
    assert not any(tmp_path.iterdir())
