"""Reference pooling in plain NumPy over transformers' hidden states, independent of bertserve's graph."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def hidden_states(model_dir: Path, batch: dict[str, np.ndarray]) -> tuple[list[np.ndarray], object]:
    """All hidden states (index 0 = embeddings) from the untouched transformers BertModel."""
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        out = bert(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states], bert


def pool(states: list[np.ndarray], bert, mask: np.ndarray, pooling: str, layers: Sequence[int],
         normalize: bool = False) -> np.ndarray:
    """bert-as-service semantics: concatenate the chosen layers, then pool over real tokens."""
    n_layers = len(states) - 1
    chosen = [states[n_layers + 1 + layer] for layer in layers]
    x = np.concatenate(chosen, axis=-1).astype(np.float64)
    m = mask.astype(bool)
    rows = []
    for i in range(x.shape[0]):
        real = x[i][m[i]]
        if pooling == "mean":
            rows.append(real.mean(axis=0))
        elif pooling == "max":
            rows.append(real.max(axis=0))
        elif pooling == "mean_max":
            rows.append(np.concatenate([real.mean(axis=0), real.max(axis=0)]))
        elif pooling == "cls":
            rows.append(real[0])
        elif pooling == "sep":
            rows.append(real[-1])
        elif pooling == "cls_pooled":
            w = bert.pooler.dense.weight.detach().numpy().astype(np.float64)
            b = bert.pooler.dense.bias.detach().numpy().astype(np.float64)
            rows.append(np.concatenate([np.tanh(layer[i][0] @ w.T + b) for layer in chosen]))
        elif pooling == "none":
            rows.append(x[i] * m[i][:, None])
        else:
            raise ValueError(pooling)
    out = np.stack(rows)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.astype(np.float32)
