"""The served tokenizer: the model's own casing by default, overridable."""

from __future__ import annotations

import pytest

from bertserve.export.tokenizer import build_tokenizer

pytestmark = pytest.mark.server  # the tokenizer is read through transformers, which imports torch


def _tokens(folder, **options):
    prepared = build_tokenizer(folder, 32, False, **options)
    return prepared.tokenizer.encode("Héllo WORLD").tokens, prepared


def test_model_casing_by_default_and_special_tokens(plain_bert_dir):
    tokens, prepared = _tokens(plain_bert_dir)
    assert tokens == ["[CLS]", "hello", "world", "[SEP]"]  # an uncased model: lower-cased, accents stripped
    assert (prepared.special_tokens.cls, prepared.special_tokens.sep, prepared.special_tokens.unk) == (
        "[CLS]", "[SEP]", "[UNK]")
    assert (prepared.cls_id, prepared.sep_id) == (101, 102)


def test_casing_override_keeps_text_as_written(plain_bert_dir):
    tokens, _ = _tokens(plain_bert_dir, lowercase=False)
    assert tokens[1] != "hello" and "world" not in tokens  # the uncased vocabulary has no "WORLD"
    assert _tokens(plain_bert_dir, lowercase=True)[0] == ["[CLS]", "hello", "world", "[SEP]"]
