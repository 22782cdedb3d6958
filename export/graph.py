"""The exported encoder: BERT embeddings, the encoder layers up to the deepest one pooled, and the pooling head.

Layers above the deepest requested one are not part of this module, so they are
absent from the exported graph and cost nothing at inference time.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .options import hidden_state_indices
from .pooling import Pooling, PoolingHead

# Exported node names of each layer's feed-forward down-projection: int8 leaves them in fp32, since their
# inputs carry outliers that int8 flattens.
FFN_DOWN_PROJECTION = r"/layers\.\d+/output/dense/MatMul"


def hidden_states(embeddings: nn.Module, layers: nn.ModuleList, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> list[torch.Tensor]:
    """The embeddings' output and each layer's, as transformers computes them, in a traceable form."""
    hidden = embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    # Additive attention bias built here, not by transformers, whose mask helpers
    # bake the traced sequence length into the graph.
    keep = attention_mask[:, None, None, :].to(hidden.dtype)
    bias = (1.0 - keep) * torch.finfo(hidden.dtype).min
    states = [hidden]
    for layer in layers:
        out = layer(hidden, attention_mask=bias)
        hidden = out[0] if isinstance(out, tuple) else out
        states.append(hidden)
    return states


class EncoderGraph(nn.Module):
    """`(input_ids, attention_mask, token_type_ids)` -> pooled embeddings, as one traceable module."""

    def __init__(
        self,
        bert: nn.Module,
        layers: Sequence[int],
        pooling: Pooling,
        normalize: bool,
        excluded_ids: Sequence[int] = (),
    ) -> None:
        super().__init__()
        num_layers = len(bert.encoder.layer)
        self.indices = hidden_state_indices(layers, num_layers)
        self.excluded_ids = tuple(excluded_ids)  # token ids left out of pooling (bert-as-service's mask_cls_sep)
        self.embeddings = bert.embeddings
        self.layers = nn.ModuleList(bert.encoder.layer[: max(self.indices)])
        self.head = PoolingHead(pooling, normalize, bert.pooler if pooling is Pooling.CLS_POOLED else None)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        states = hidden_states(self.embeddings, self.layers, input_ids, attention_mask, token_type_ids)
        # The pooling head always computes in fp32 (a no-op for an fp32 encoder).
        features = torch.cat([states[i] for i in self.indices], dim=-1).float()
        return self.head(features, self.pooling_mask(input_ids, attention_mask))

    def pooling_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The tokens pooling reads: real ones, less any excluded special tokens."""
        for token_id in self.excluded_ids:
            attention_mask = attention_mask * (input_ids != token_id).to(attention_mask.dtype)
        return attention_mask

    def half_encoder(self, dtype: torch.dtype = torch.float16) -> EncoderGraph:
        """Run embeddings and encoder layers in a 16-bit `dtype` (fp16, bf16); pooling, pooler and
        normalisation stay fp32."""
        self.embeddings.to(dtype)
        self.layers.to(dtype)
        return self
