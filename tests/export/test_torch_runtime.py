"""The torch runtime's TorchScript encoder: the same layers, pooling and normalisation as the ONNX graph, both checked
against the same NumPy reference over transformers' hidden states (test_graph.py checks the ONNX graph against it).

Graph math, not weights: the tiny 6-layer BERT (`tiny6_bert_dir`) stands in for MiniLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bertserve.errors import ConfigError, ExportError
from bertserve.export import Deployment, ExportConfig, Pooling, Precision, Runtime
from bertserve.export.config import plan_export

from . import reference
from .conftest import MAX_SEQ_LEN, graph_texts

# Each case differs in pooling, layers, masking or normalisation from the others.
CASES = {
    "mean-normalized": dict(pooling=Pooling.MEAN, layers=(-1,), normalize=True),
    "mean_max-two-layers": dict(pooling=Pooling.MEAN_MAX, layers=(-1, -2)),
    "cls_pooled-two-layers": dict(pooling=Pooling.CLS_POOLED, layers=(-2, -1)),
    "none-layer-4-masked": dict(pooling=Pooling.NONE, layers=(-4,), mask_cls_sep=True),
}
TEXTS = graph_texts()
Export = Callable[..., tuple[Path, dict[str, np.ndarray]]]


@pytest.fixture(scope="module")
def torchscript(tiny6_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Export one TorchScript encoder of the tiny BERT per case and precision, once for the module: the fp16 test
    compares against the fp32 export the fp32 test checked."""
    from bertserve.export.encoder import export_encoder
    from bertserve.export.tokenizer import build_tokenizer, encoder_inputs

    done: dict[tuple[str, Precision], tuple[Path, dict[str, np.ndarray]]] = {}

    def export(case: str, precision: Precision = Precision.FP32) -> tuple[Path, dict[str, np.ndarray]]:
        if (case, precision) not in done:
            folder = tmp_path_factory.mktemp(f"{case}-{precision.value}")
            plan = plan_export(ExportConfig(model_dir=tiny6_bert_dir, repository=folder / "repo",
                                            max_seq_len=MAX_SEQ_LEN, precision=precision,
                                            deployment=Deployment(runtime=Runtime.TORCH), **CASES[case]))
            prepared = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input)
            export_encoder(plan, prepared, folder / "model.pt", plan.precision)
            done[case, precision] = folder / "model.pt", encoder_inputs(prepared.tokenizer, TEXTS)
        return done[case, precision]

    return export


def _run(module, batch: dict[str, np.ndarray]):
    import torch

    from bertserve.export.encoder import INPUT_NAMES

    with torch.inference_mode():
        return module(*(torch.from_numpy(batch[name]) for name in INPUT_NAMES))


def _torch(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    return _run(torch.jit.load(str(path)), batch).float().numpy()


@pytest.mark.server
@pytest.mark.parametrize("case", CASES)
def test_torchscript_matches_the_reference_in_fp32(case, torchscript, tiny6_states):
    """Against NumPy pooling over transformers' hidden states: the reference the ONNX graph is held to."""
    options = CASES[case]
    pt, batch = torchscript(case)
    assert all(np.array_equal(batch[k], tiny6_states.batch[k]) for k in batch)
    got = _torch(pt, batch)
    ids = batch["input_ids"]
    mask = batch["attention_mask"] * ((ids != tiny6_states.cls_id) & (ids != tiny6_states.sep_id)
                                      if options.get("mask_cls_sep") else 1)
    expected = reference.pool(tiny6_states.hidden, tiny6_states.bert, mask, options["pooling"].value,
                              options["layers"], normalize=options.get("normalize", False))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.server
def test_fp16_keeps_an_fp32_tail_and_stays_close(torchscript):
    import torch

    fp32, batch = torchscript("mean-normalized")
    fp16, _ = torchscript("mean-normalized", Precision.FP16)
    module = torch.jit.load(str(fp16))
    assert {p.dtype for p in module.parameters()} == {torch.float16}
    out = _run(module, batch)
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

    with pytest.raises(ConfigError, match="Python backend only"):
        Deployment(backend=Backend.ONNXRUNTIME, runtime=Runtime.TORCH)
