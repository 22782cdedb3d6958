"""Pooling math on random tensors: padding never changes a result.

The pooling head is a torch module, so these tests import torch (inside each test) and are `server` tests.
"""

from __future__ import annotations

import pytest

from bertserve.export import Pooling

pytestmark = pytest.mark.server  # torch


def _pooler(hidden: int):
    """A stand-in for BERT's pooler: the dense layer and activation `PoolingHead` reads."""
    import torch

    pooler = torch.nn.Module()
    pooler.dense = torch.nn.Linear(hidden, hidden)
    pooler.activation = torch.nn.Tanh()
    return pooler


@pytest.mark.parametrize("pooling", list(Pooling))
@pytest.mark.parametrize("normalize", [False, True])
def test_padding_never_counts(pooling, normalize):
    import torch

    from bertserve.export.pooling import PoolingHead

    torch.manual_seed(0)
    hidden, layers = 8, 2
    head = PoolingHead(pooling, normalize, _pooler(hidden) if pooling is Pooling.CLS_POOLED else None)
    states = torch.randn(3, 5, hidden * layers)
    lengths = torch.tensor([5, 3, 1])
    mask = (torch.arange(5)[None, :] < lengths[:, None]).long()
    # Same real tokens, with large garbage written into the padded positions.
    noisy = torch.where(mask[..., None].bool(), states, torch.full_like(states, 1e4))
    a, b = head(states, mask), head(noisy, mask)
    assert a.shape[-1] == pooling.output_dim(hidden * layers)
    if pooling is Pooling.NONE:
        assert torch.equal(a[mask == 0], torch.zeros_like(a[mask == 0]))
    assert torch.allclose(a, b, atol=1e-6)
    # A row pooled alone, without padding, equals the same row pooled in the padded batch.
    alone = head(states[1:2, :3], mask[1:2, :3])
    assert torch.allclose(alone[0], a[1] if pooling is not Pooling.NONE else a[1, :3], atol=1e-6)


def test_sep_is_the_last_real_token():
    import torch

    from bertserve.export.pooling import PoolingHead

    states = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert PoolingHead(Pooling.SEP, False)(states, mask).flatten().tolist() == [2.0, 7.0]


def test_pooler_only_for_cls_pooled():
    from bertserve.export.pooling import PoolingHead

    with pytest.raises(ValueError):
        PoolingHead(Pooling.MEAN, False, _pooler(4))
    with pytest.raises(ValueError):
        PoolingHead(Pooling.CLS_POOLED, False, None)
