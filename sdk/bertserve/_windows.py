"""Long inputs encoded whole (long_input "chunk"): the windows of max_seq_len - 2 tokens an over-long item is split
into, and its vector from theirs, averaged by the tokens each holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import contract
from .errors import InvalidInputError


@dataclass(frozen=True)
class Window:
    item: int  # the input it belongs to
    start: int  # its first token, counted in the text's tokens ([CLS] and [SEP] left out)
    tokens: int  # text tokens it holds: its weight


def plan_windows(counts: Sequence[int], max_seq_len: int, max_windows: int = contract.DEFAULT_MAX_WINDOWS) -> list[Window]:
    """The windows of every item longer than `max_seq_len` (`counts` as the tokenizer reports them, [CLS] and
    [SEP] included); an InvalidInputError where an item cannot be split or the windows pass `max_windows`."""
    room = max_seq_len - 2
    windows: list[Window] = []
    for item, count in enumerate(counts):
        if count == contract.NOT_COUNTED:
            raise InvalidInputError(
                f"item {item} is longer than the {contract.char_budget(max_seq_len):,} characters a model of "
                f"max_seq_len {max_seq_len} reads, too long to encode in windows; split it into shorter texts")
        if count <= max_seq_len:
            continue
        text_tokens = count - 2
        windows += [Window(item, start, min(room, text_tokens - start)) for start in range(0, text_tokens, room)]
        if len(windows) > max_windows:
            raise InvalidInputError(
                f"long_input='chunk' needs more than {max_windows} windows of {room} tokens for this call (item {item} "
                f"has {text_tokens} tokens), past the bound of {max_windows} (max_windows); send fewer or shorter "
                "texts per call")
    return windows


def combine(vectors: np.ndarray, windows: Sequence[Window], window_vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """`vectors` with each windowed item's vector replaced by the token-weighted mean of its windows' vectors,
    L2-normalised where the model normalises."""
    out = np.array(vectors, np.float32, copy=True)
    items = np.array([w.item for w in windows])
    weights = np.array([w.tokens for w in windows], np.float64)
    for item in np.unique(items):
        mine = items == item
        mean = (window_vectors[mine] * weights[mine, None]).sum(axis=0) / weights[mine].sum()
        if normalize:
            mean = mean / max(np.linalg.norm(mean), 1e-12)
        out[item] = mean
    return out
