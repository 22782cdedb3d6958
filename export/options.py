"""The export choices that need no torch: pooling strategies and layer numbering.

Kept apart from the graph modules so that export options can be read, validated and planned (`ExportConfig`,
`plan_export`) without importing torch, the bertserve[server] side.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence


class Pooling(str, Enum):
    """How token vectors become one sentence vector (bert-as-service's pooling_strategy)."""

    MEAN = "mean"  # masked mean over tokens
    MAX = "max"  # masked max over tokens
    MEAN_MAX = "mean_max"  # mean and max concatenated
    CLS = "cls"  # the first token ([CLS])
    SEP = "sep"  # the last real token ([SEP] after truncation)
    CLS_POOLED = "cls_pooled"  # BERT's pooler (dense + tanh) over [CLS], per layer
    NONE = "none"  # no pooling: one vector per token, zeros at padding

    def output_dim(self, features: int) -> int:
        """Width of the pooled vector for `features` input features per token."""
        return 2 * features if self is Pooling.MEAN_MAX else features


def hidden_state_indices(layers: Sequence[int], num_layers: int) -> list[int]:
    """Map layers counted from -1 (last) to indices into HF `hidden_states` (0 is the embeddings)."""
    for layer in layers:
        if not -num_layers <= layer <= -1:
            raise ValueError(
                f"layer {layer} does not exist: the model has {num_layers} layers, numbered -1 (last) to -{num_layers}"
            )
    return [num_layers + 1 + layer for layer in layers]
