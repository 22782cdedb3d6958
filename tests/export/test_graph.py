"""The exported ONNX graph against a NumPy reference from transformers' hidden states, per pooling and layer set.

Graph math, not weights: a tiny 6-layer BERT (`tiny6_bert_dir`) stands in for MiniLM, as deep and far cheaper.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bertserve.export import ExportConfig, Pooling
from bertserve.export.config import plan_export
from bertserve.export.tokenizer import build_tokenizer, encoder_inputs

from . import reference
from .conftest import MAX_SEQ_LEN, graph_texts

pytestmark = pytest.mark.server  # every test here exports real weights

POOLING_LAYERS = (-1, -2)  # every pooling over two layers, concatenated in the order given
LAYER_SETS = [(-2,), (-6,), (-4, -3, -2, -1)]  # each layer set with mean pooling
TEXTS = graph_texts()


def _export(model_dir, tmp_path, **options):
    """The ONNX encoder alone (no repository), with the batch its own tokenizer makes of TEXTS."""
    from bertserve.export.encoder import export_encoder  # torch

    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = plan_export(ExportConfig(model_dir=model_dir, repository=tmp_path / "repo", max_seq_len=MAX_SEQ_LEN, **options))
    prepared = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input)
    path = tmp_path / "model.onnx"
    dim = export_encoder(plan, prepared, path, plan.precision).dim
    return path, dim, encoder_inputs(prepared.tokenizer, TEXTS)


def _check(path, dim, exported_batch, states, pooling, layers):
    hidden, bert, batch = states.hidden, states.bert, states.batch
    assert all(np.array_equal(batch[k], exported_batch[k]) for k in batch)
    got = ort.InferenceSession(str(path)).run(["embedding"], batch)[0]
    want = reference.pool(hidden, bert, batch["attention_mask"], pooling, layers)
    assert got.shape == want.shape
    assert got.shape[-1] == dim == (2 if pooling == "mean_max" else 1) * len(layers) * bert.config.hidden_size
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("pooling", [p.value for p in Pooling])
def test_each_pooling_matches_reference(pooling, tiny6_bert_dir, tmp_path, tiny6_states):
    path, dim, batch = _export(tiny6_bert_dir, tmp_path, pooling=Pooling(pooling), layers=POOLING_LAYERS)
    _check(path, dim, batch, tiny6_states, pooling, POOLING_LAYERS)


def _ffn_weights(path, config: dict) -> int:
    """Feed-forward weight matrices (hidden x intermediate, either orientation): two per encoder layer."""
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    shapes = [tuple(init.dims) for init in onnx.load(str(path)).graph.initializer]
    return sum(shape in {(hidden, intermediate), (intermediate, hidden)} for shape in shapes)


@pytest.mark.parametrize("layers", LAYER_SETS, ids=lambda ls: ",".join(map(str, ls)))
def test_each_layer_set_matches_reference_and_upper_layers_are_cut(layers, tiny6_bert_dir, tmp_path, tiny6_states):
    path, dim, batch = _export(tiny6_bert_dir, tmp_path, pooling=Pooling.MEAN, layers=layers)
    _check(path, dim, batch, tiny6_states, "mean", layers)
    # The graph holds the layers up to the deepest one pooled: layer -2 of 6 keeps 5 layers' weights.
    config = json.loads((tiny6_bert_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    assert _ffn_weights(path, config) == 2 * (6 + 1 + max(layers))


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("none", False)])
def test_mask_cls_sep_leaves_special_tokens_out_of_pooling(pooling, normalize, tiny6_bert_dir, tmp_path, tiny6_states):
    """Also L2 normalisation in the graph, after pooling (one export checks both)."""
    hidden, bert, batch = tiny6_states.hidden, tiny6_states.bert, tiny6_states.batch
    path, _, _ = _export(tiny6_bert_dir, tmp_path, pooling=Pooling(pooling), layers=(-1,), mask_cls_sep=True,
                         normalize=normalize)
    got = ort.InferenceSession(str(path)).run(["embedding"], batch)[0]
    ids = batch["input_ids"]
    kept = batch["attention_mask"] * (ids != tiny6_states.cls_id) * (ids != tiny6_states.sep_id)
    want = reference.pool(hidden, bert, kept, pooling, (-1,), normalize=normalize)
    assert np.abs(got - want).max() <= 1e-4
    unmasked = reference.pool(hidden, bert, batch["attention_mask"], pooling, (-1,), normalize=normalize)
    assert np.abs(got - unmasked).max() > 1e-3
    if normalize:
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
