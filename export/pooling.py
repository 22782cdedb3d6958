"""Pooling strategies, written as a torch module so they become part of the exported graph.

The strategies themselves (`Pooling`) live in the torch-free `options` module; this one re-exports them.

Every strategy works over the attention mask: padding never counts. Several
encoder layers arrive concatenated along the hidden axis, so a layer set of k
layers gives k * hidden features per token before pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from .options import Pooling

__all__ = ["Pooling", "PoolingHead"]


class PoolingHead(nn.Module):
    """Pools `[batch, seq, features]` token states with a `[batch, seq]` mask, then optionally L2-normalises."""

    def __init__(self, pooling: Pooling, normalize: bool, pooler: nn.Module | None = None) -> None:
        super().__init__()
        if (pooling is Pooling.CLS_POOLED) != (pooler is not None):
            raise ValueError("a BERT pooler is needed for cls_pooled, and only for it")
        self.pooling = pooling
        self.normalize = normalize
        self.pooler = pooler

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = self._pool(states, mask, weights)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled

    def _pool(self, states: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.pooling is Pooling.NONE:
            return states * weights
        if self.pooling is Pooling.CLS:
            return states[:, 0]
        if self.pooling is Pooling.SEP:
            last = (mask.sum(dim=1) - 1).clamp(min=0)
            index = last.view(-1, 1, 1).expand(-1, 1, states.shape[-1])
            return states.gather(1, index).squeeze(1)
        if self.pooling is Pooling.CLS_POOLED:
            # The pooler maps hidden -> hidden, so apply it to each layer's [CLS] separately.
            batch, features = states.shape[0], states.shape[-1]
            hidden = self.pooler.dense.in_features
            cls = states[:, 0].reshape(batch, features // hidden, hidden)
            return self.pooler.activation(self.pooler.dense(cls)).reshape(batch, features)
        mean = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.pooling is Pooling.MEAN:
            return mean
        # Same fill value as sentence-transformers, so max pooling matches it exactly.
        maxed = states.masked_fill(weights == 0, -1e9).max(dim=1).values
        if self.pooling is Pooling.MAX:
            return maxed
        return torch.cat([mean, maxed], dim=-1)
