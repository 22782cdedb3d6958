"""`export_model` end to end: a plain BERT folder becomes a repository entry, and a failed check leaves nothing."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from bertserve.errors import ExportError
from bertserve.export import ExportConfig
from bertserve.export.tokenizer import encoder_inputs

from ..corpus import sentences
from . import reference

pytestmark = pytest.mark.server  # every test here imports the exporter, and with it torch


def _leftovers(folder: Path) -> set[str]:
    """Scratch folders an export may create: staging beside the repository, bertserve-export-* in the temp dir."""
    return {p.name for p in folder.iterdir() if p.name.startswith(".")} | {
        p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("bertserve-export-")}


def _private_temp(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temp dir of this test's own: the machine's is shared with other exports running meanwhile."""
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))


def test_plain_bert_with_only_vocab_txt_and_pytorch_weights_exports(export_model, tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer

    repo = tmp_path / "repo"
    info = export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo))
    # bert-as-service's defaults for a plain BERT: mean over layer -2, the model's own length limit.
    assert (info.name, info.dim, info.pooling, info.layers, info.normalize, info.max_seq_len) == (
        "tiny-bert", 64, "mean", (-2,), False, 128)
    assert json.loads((repo / "tiny-bert" / "bertserve.json").read_text()) == json.loads(info.to_json())

    # The served tokenizer.json, converted from vocab.txt, tokenises as transformers does from the same folder.
    texts = sentences(60)
    served = Tokenizer.from_file(str(repo / "tiny-bert_tokenizer" / "1" / "tokenizer.json"))
    batch = encoder_inputs(served, texts)
    hf = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    want = hf(texts, truncation=True, max_length=128)["input_ids"]
    assert [list(ids[mask == 1]) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])] == want

    got = ort.InferenceSession(str(repo / "tiny-bert_encoder" / "1" / "model.onnx")).run(["embedding"], batch)[0]
    hidden, bert = reference.hidden_states(tiny_bert_dir, batch)
    assert np.abs(got - reference.pool(hidden, bert, batch["attention_mask"], "mean", (-2,))).max() <= 1e-4


def test_failed_check_writes_nothing(export_model, tiny_bert_dir, tmp_path, monkeypatch):
    import bertserve.export.encoder as encoder

    # No graph can be within a negative tolerance: the check against transformers fails, as it would for a bad graph.
    monkeypatch.setattr(encoder, "TOLERANCE", -1.0)
    _private_temp(tmp_path / "tmp", monkeypatch)
    with pytest.raises(ExportError, match=r"the exported graph differs from transformers by .* \(> -1.0\)"):
        export_model(ExportConfig(model_dir=tiny_bert_dir, repository=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()
    assert _leftovers(tmp_path) == set() and not any((tmp_path / "tmp").iterdir())


def test_existing_model_is_refused_before_any_export_work(export_model, plain_bert_dir, tmp_path, caplog):
    (tmp_path / "repo" / "minilm-plain_encoder").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="bertserve.export"), pytest.raises(
            ExportError, match="minilm-plain_encoder already exists; pass --overwrite"):
        export_model(ExportConfig(model_dir=plain_bert_dir, repository=tmp_path / "repo"))
    assert not [r.message for r in caplog.records if r.message.startswith("exporting")]
