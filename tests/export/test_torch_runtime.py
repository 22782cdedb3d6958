"""The torch runtime's TorchScript encoder: the same layers, pooling and normalisation as the ONNX graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from bertserve.errors import ExportError
from bertserve.export import Deployment, ExportConfig, Pooling, Precision, Runtime
from bertserve.export.config import plan_export
from bertserve.export.encoder import INPUT_NAMES, export_encoder
from bertserve.export.tokenizer import build_tokenizer, encoder_inputs

from ..corpus import sentences
from . import reference

TEXTS = sentences(24)  # past max_seq_len too: truncation is exercised
MAX_SEQ_LEN = 64
# Each case differs in pooling, layers, masking or normalisation from the others.
CASES = {
    "mean-normalized": dict(pooling=Pooling.MEAN, layers=(-1,), normalize=True),
    "mean_max-two-layers": dict(pooling=Pooling.MEAN_MAX, layers=(-1, -2)),
    "cls_pooled-two-layers": dict(pooling=Pooling.CLS_POOLED, layers=(-2, -1)),
    "none-layer-4-masked": dict(pooling=Pooling.NONE, layers=(-4,), mask_cls_sep=True),
}


def _export(model_dir, tmp_path, runtime, precision=Precision.FP32, **options):
    """One encoder file of the given runtime (no repository), with the batch its tokenizer makes of TEXTS."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = plan_export(ExportConfig(model_dir=model_dir, repository=tmp_path / "repo", max_seq_len=MAX_SEQ_LEN,
                                    precision=precision, deployment=Deployment(runtime=runtime), **options))
    prepared = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input)
    path = tmp_path / ("model.pt" if runtime is Runtime.TORCH else "model.onnx")
    export_encoder(plan, prepared, path, plan.precision)
    return path, encoder_inputs(prepared.tokenizer, TEXTS)


def _torch(path, batch):
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return module(*(torch.from_numpy(batch[name]) for name in INPUT_NAMES)).float().numpy()


@pytest.mark.server
@pytest.mark.parametrize("case", CASES)
def test_torchscript_equals_the_onnx_graph_in_fp32(case, plain_bert_dir, tmp_path):
    options = CASES[case]
    pt, batch = _export(plain_bert_dir, tmp_path, Runtime.TORCH, **options)
    onnx_file, onnx_batch = _export(plain_bert_dir, tmp_path, Runtime.ONNXRUNTIME, **options)
    assert all(np.array_equal(batch[k], onnx_batch[k]) for k in batch)
    got = _torch(pt, batch)
    want = ort.InferenceSession(str(onnx_file)).run(["embedding"], batch)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4
    # And both are right, not merely alike: against NumPy pooling over transformers' hidden states.
    hidden, bert = reference.hidden_states(plain_bert_dir, batch)
    mask = batch["attention_mask"] * ((batch["input_ids"] != 101) & (batch["input_ids"] != 102)
                                      if options.get("mask_cls_sep") else 1)
    expected = reference.pool(hidden, bert, mask, options["pooling"].value, options["layers"],
                              normalize=options.get("normalize", False))
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.server
def test_fp16_keeps_an_fp32_tail_and_stays_close(plain_bert_dir, tmp_path):
    fp32, batch = _export(plain_bert_dir, tmp_path / "fp32", Runtime.TORCH, pooling=Pooling.MEAN, normalize=True)
    fp16, _ = _export(plain_bert_dir, tmp_path / "fp16", Runtime.TORCH, Precision.FP16, pooling=Pooling.MEAN,
                      normalize=True)
    module = torch.jit.load(str(fp16))
    assert {p.dtype for p in module.parameters()} == {torch.float16}
    with torch.inference_mode():
        out = module(*(torch.from_numpy(batch[name]) for name in INPUT_NAMES))
    assert out.dtype == torch.float32  # the pooling and normalisation tail
    want = _torch(fp32, batch)
    got = out.numpy()
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosines.min() >= 0.999
    assert np.abs(got - want).max() > 0  # it did run in fp16


def test_int8_is_refused_for_the_torch_runtime_before_any_work(plain_bert_dir, tmp_path):
    with pytest.raises(ExportError, match=r"--runtime torch runs fp16 \(GPUs\) or fp32, not int8"):
        plan_export(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path, precision=Precision.INT8,
                                 deployment=Deployment(runtime=Runtime.TORCH)))


def test_the_torch_runtime_is_python_backend_only():
    from bertserve.export import Backend

    with pytest.raises(ValueError, match="Python backend only"):
        Deployment(backend=Backend.ONNXRUNTIME, runtime=Runtime.TORCH)
