"""The exported ONNX graph against a NumPy reference from transformers' hidden states, per pooling and layer set."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bertserve.errors import ExportError
from bertserve.export import ExportConfig, Pooling
from bertserve.export.config import plan_export
from bertserve.export.encoder import export_encoder
from bertserve.export.tokenizer import build_tokenizer

from ..corpus import sentences
from . import reference

LAYER_SETS = [(-1,), (-2,), (-1, -2), (-4, -3, -2, -1)]
TEXTS = sentences(24)  # includes inputs past max_seq_len, so truncation is exercised too


def _export(model_dir, tmp_path, **options):
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = plan_export(ExportConfig(model_dir=model_dir, repository=tmp_path / "repo", max_seq_len=64, **options))
    prepared = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input)
    path = tmp_path / "model.onnx"
    dim = export_encoder(plan, prepared, path, plan.precision)
    encodings = prepared.tokenizer.encode_batch(TEXTS)
    batch = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    return path, dim, batch


@pytest.fixture(scope="module")
def states(plain_bert_dir, tmp_path_factory):
    _, _, batch = _export(plain_bert_dir, tmp_path_factory.mktemp("probe"), pooling=Pooling.CLS, layers=(-1,))
    hidden, bert = reference.hidden_states(plain_bert_dir, batch)
    return hidden, bert, batch


@pytest.mark.parametrize("layers", LAYER_SETS, ids=lambda ls: ",".join(map(str, ls)))
@pytest.mark.parametrize("pooling", [p.value for p in Pooling])
def test_graph_matches_reference(pooling, layers, plain_bert_dir, tmp_path, states):
    hidden, bert, batch = states
    path, dim, exported_batch = _export(plain_bert_dir, tmp_path, pooling=Pooling(pooling), layers=layers)
    assert all(np.array_equal(batch[k], exported_batch[k]) for k in batch)
    got = ort.InferenceSession(str(path)).run(["embedding"], batch)[0]
    want = reference.pool(hidden, bert, batch["attention_mask"], pooling, layers)
    assert got.shape == want.shape
    assert got.shape[-1] == dim == (2 if pooling == "mean_max" else 1) * len(layers) * 384
    assert np.abs(got - want).max() <= 1e-4


def test_normalisation_in_graph(plain_bert_dir, tmp_path, states):
    hidden, bert, batch = states
    path, _, _ = _export(plain_bert_dir, tmp_path, pooling=Pooling.MEAN_MAX, layers=(-1, -2), normalize=True)
    got = ort.InferenceSession(str(path)).run(["embedding"], batch)[0]
    want = reference.pool(hidden, bert, batch["attention_mask"], "mean_max", (-1, -2), normalize=True)
    assert np.abs(got - want).max() <= 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _ffn_weights(path) -> int:
    """Feed-forward weight matrices (hidden x intermediate, either orientation): two per encoder layer."""
    shapes = [tuple(init.dims) for init in onnx.load(str(path)).graph.initializer]
    return sum(shape in {(384, 1536), (1536, 384)} for shape in shapes)


def test_upper_layers_are_cut_from_the_graph(plain_bert_dir, tmp_path):
    full, _, _ = _export(plain_bert_dir, tmp_path / "full", pooling=Pooling.MEAN, layers=(-1,))
    cut, _, _ = _export(plain_bert_dir, tmp_path / "cut", pooling=Pooling.MEAN, layers=(-2,))
    shallow, _, _ = _export(plain_bert_dir, tmp_path / "shallow", pooling=Pooling.MEAN, layers=(-6,))
    assert _ffn_weights(full) == 2 * 6
    assert _ffn_weights(cut) == 2 * 5  # layer -2 of a 6-layer model: 5 layers' weights
    assert _ffn_weights(shallow) == 2 * 1
    assert cut.stat().st_size < full.stat().st_size


@pytest.mark.parametrize("layers", [(0,), (-7,), (1,)])
def test_layer_out_of_range_is_a_clear_error(plain_bert_dir, tmp_path, layers):
    with pytest.raises(ExportError, match="numbered -1 \\(last\\) to -6"):
        _export(plain_bert_dir, tmp_path, layers=layers)


@pytest.mark.parametrize("pooling", ["mean", "max", "none"])
def test_mask_cls_sep_leaves_special_tokens_out_of_pooling(pooling, plain_bert_dir, tmp_path, states):
    hidden, bert, batch = states
    path, _, _ = _export(plain_bert_dir, tmp_path, pooling=Pooling(pooling), layers=(-1,), mask_cls_sep=True)
    got = ort.InferenceSession(str(path)).run(["embedding"], batch)[0]
    ids = batch["input_ids"]
    kept = batch["attention_mask"] * (ids != 101) * (ids != 102)  # this vocabulary's [CLS] and [SEP]
    want = reference.pool(hidden, bert, kept, pooling, (-1,))
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(got - reference.pool(hidden, bert, batch["attention_mask"], pooling, (-1,))).max() > 1e-3


@pytest.mark.parametrize("pooling", ["cls", "sep", "cls_pooled"])
def test_mask_cls_sep_is_refused_where_it_leaves_nothing(pooling, plain_bert_dir, tmp_path):
    with pytest.raises(ExportError, match="leaves nothing"):
        plan_export(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path, pooling=Pooling(pooling),
                                 mask_cls_sep=True))
