"""Sentences with exact token counts, so every measurement knows how much work one sentence is."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer

from bertserve import contract

# Words that are one WordPiece each in BERT's uncased vocabulary.
_WORDS = (
    "the cat sat on a mat and dog ran in park with ball while birds sang over green hills under blue sky "
    "people walked through city streets after long day at work some read books others drank coffee"
).split()


def sentences(tokenizer: Tokenizer, n: int, tokens: int, seed: int = 0) -> list[str]:
    """`n` different sentences of exactly `tokens` tokens, [CLS] and [SEP] included."""
    rng = random.Random(seed * 1000 + tokens)
    out = [" ".join(rng.choice(_WORDS) for _ in range(tokens - 2)) for _ in range(n)]
    counts = {len(e.ids) for e in tokenizer.encode_batch(out)}
    if counts != {tokens}:
        raise ValueError(f"workload sentences came out at {sorted(counts)} tokens, not {tokens}")
    return out


def mixed(tokenizer: Tokenizer, n: int, lengths: tuple[int, ...], seed: int = 0) -> list[str]:
    """`n` sentences whose lengths are drawn from `lengths`: traffic where padding costs the most."""
    rng = random.Random(seed)
    pools = {length: sentences(tokenizer, n, length, seed) for length in lengths}
    return [pools[rng.choice(lengths)][i] for i in range(n)]


def write_input_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer `--input-data` JSON: one entry per sentence for the ensemble's `text` input."""
    path.write_text(json.dumps({"data": [{contract.TEXT: {"content": [t], "shape": [1]}} for t in texts]}))
    return path
