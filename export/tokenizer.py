"""The model's own fast tokenizer, set up to truncate and pad the way the encoder expects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tokenizers import Tokenizer, normalizers

from bertserve import contract
from bertserve.errors import ExportError
from bertserve.model_repository.repository import TOKEN_TENSORS, SpecialTokens


@dataclass(frozen=True)
class PreparedTokenizer:
    tokenizer: Tokenizer
    special_tokens: SpecialTokens
    cls_id: int
    sep_id: int


def build_tokenizer(
    transformer_dir: Path, max_seq_len: int, lowercase_input: bool, lowercase: Optional[bool] = None
) -> PreparedTokenizer:
    """The model's tokenizer with its vocabulary and casing, right-truncating at `max_seq_len`.

    Folders that only carry vocab.txt are converted by transformers, so the
    served tokenizer is always a self-contained tokenizer.json. `lowercase`
    overrides the model's own casing (True: lower-case and strip accents, as
    uncased BERT; False: keep text as written).
    """
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(transformer_dir), use_fast=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"could not load the tokenizer of {transformer_dir}: {exc}") from exc
    if not getattr(hf, "is_fast", False):
        raise ExportError(f"{transformer_dir} has no fast (Rust) tokenizer; bertserve needs tokenizer.json or vocab.txt")
    tokenizer = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_len, strategy="longest_first", direction="right")
    tokenizer.enable_padding(direction="right", pad_id=hf.pad_token_id, pad_token=hf.pad_token)
    if lowercase is not None:
        if not isinstance(tokenizer.normalizer, normalizers.BertNormalizer):
            raise ExportError(f"{transformer_dir}'s tokenizer is not a BERT tokenizer; its casing cannot be overridden")
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
    if lowercase_input:  # sentence-transformers' do_lower_case lower-cases before the tokenizer runs
        steps = [normalizers.Lowercase()] + ([tokenizer.normalizer] if tokenizer.normalizer else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
    special = SpecialTokens(cls=hf.cls_token, sep=hf.sep_token, unk=hf.unk_token)
    return PreparedTokenizer(tokenizer, special, hf.cls_token_id, hf.sep_token_id)


def encoder_inputs(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The encoder's int64 inputs for `texts`, as `tokenizer` pads and truncates them."""
    encodings = tokenizer.encode_batch(list(texts))
    columns = {contract.INPUT_IDS: "ids", contract.ATTENTION_MASK: "attention_mask", contract.TOKEN_TYPE_IDS: "type_ids"}
    return {name: np.array([getattr(e, columns[name]) for e in encodings], dtype=np.int64) for name in TOKEN_TENSORS}
