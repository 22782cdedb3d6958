"""How export options are filled in from the model folder, and the errors for bad ones."""

from __future__ import annotations

import json
import shutil

import pytest

from bertserve.errors import ExportError
from bertserve.export import ExportConfig, Pooling
from bertserve.export.config import plan_export


def test_sentence_transformers_pipeline_is_reproduced(minilm_dir, tmp_path):
    plan = plan_export(ExportConfig(model_dir=minilm_dir, repository=tmp_path))
    assert (plan.pooling, plan.layers, plan.normalize, plan.max_seq_len) == (Pooling.MEAN, (-1,), True, 256)


def test_plain_bert_gets_bert_as_service_defaults(plain_bert_dir, tmp_path):
    plan = plan_export(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path))
    assert (plan.pooling, plan.layers, plan.normalize, plan.max_seq_len) == (Pooling.MEAN, (-2,), False, 512)
    assert plan.name == "minilm-plain"


def test_explicit_options_win(minilm_dir, tmp_path):
    plan = plan_export(ExportConfig(model_dir=minilm_dir, repository=tmp_path, pooling=Pooling.CLS, layers=(-3, -1),
                                    normalize=False, max_seq_len=32, name="mine"))
    assert (plan.pooling, plan.layers, plan.normalize, plan.max_seq_len, plan.name) == (
        Pooling.CLS, (-3, -1), False, 32, "mine")


def test_unsupported_sentence_transformers_pooling_asks_for_an_explicit_choice(minilm_dir, tmp_path):
    folder = tmp_path / "st"
    shutil.copytree(minilm_dir, folder)
    config = folder / "1_Pooling" / "config.json"
    flags = json.loads(config.read_text())
    config.write_text(json.dumps({**flags, "pooling_mode_mean_sqrt_len_tokens": True}))
    with pytest.raises(ExportError, match="pass --pooling"):
        plan_export(ExportConfig(model_dir=folder, repository=tmp_path / "repo"))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_seq_len": 600}, "outside what the model supports"),
        ({"max_seq_len": 1}, "outside what the model supports"),
        ({"name": "bad name/with slash"}, "not valid for Triton"),
        ({"layers": (-1, -1)}, "lists a layer twice"),
        ({"max_batch_size": 0}, "at least 1"),
    ],
)
def test_bad_options_are_clear_errors(plain_bert_dir, tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        plan_export(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path, **options))


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ExportError, match="no config.json"):
        plan_export(ExportConfig(model_dir=tmp_path, repository=tmp_path / "repo"))


def test_non_bert_model_is_refused(plain_bert_dir, tmp_path):
    folder = tmp_path / "roberta"
    shutil.copytree(plain_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ExportError, match="BERT models"):
        plan_export(ExportConfig(model_dir=folder, repository=tmp_path / "repo"))


@pytest.mark.parametrize("layers", [(0,), (-7,), (1,)])
def test_layer_out_of_range_is_a_clear_error(plain_bert_dir, tmp_path, layers):
    with pytest.raises(ExportError, match="numbered -1 \\(last\\) to -6"):
        plan_export(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path, layers=layers))


@pytest.mark.parametrize("pooling", ["cls", "sep", "cls_pooled"])
def test_mask_cls_sep_is_refused_where_it_leaves_nothing(pooling, plain_bert_dir, tmp_path):
    with pytest.raises(ExportError, match="leaves nothing"):
        plan_export(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path, pooling=Pooling(pooling),
                                 mask_cls_sep=True))
