"""Generated Triton configs: valid under Triton's protobuf schema, and saying what the design needs."""

from __future__ import annotations

import pytest

from bertserve.info import ModelInfo
from bertserve.model_repository.config import parse
from bertserve.model_repository.repository import model_configs


def _info(pooling: str = "mean") -> ModelInfo:
    return ModelInfo(name="m", source="/x", dim=768, pooling=pooling, layers=(-2, -1), normalize=False,
                     max_seq_len=128, max_batch_size=32)


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_configs_round_trip_through_triton_schema(pooling):
    for config in model_configs(_info(pooling)):
        parsed = parse(config.render())
        assert parsed == config.to_proto()
        assert parsed.name == config.name and parsed.max_batch_size == 32


def test_encoder_accepts_ragged_batches_and_batches_dynamically():
    _, encoder, _ = model_configs(_info())
    parsed = parse(encoder.render())
    assert parsed.backend == "python"
    assert all(tensor.allow_ragged_batch for tensor in parsed.input)
    assert parsed.dynamic_batching.max_queue_delay_microseconds > 0
    assert list(parsed.output[0].dims) == [768]


def test_token_level_model_exposes_mask_and_per_token_vectors():
    _, encoder, ensemble = model_configs(_info("none"))
    assert list(parse(encoder.render()).output[0].dims) == [-1, 768]
    assert [o.name for o in parse(ensemble.render()).output] == ["embedding", "attention_mask"]


def test_ensemble_records_model_info():
    info = _info()
    _, _, ensemble = model_configs(info)
    parsed = parse(ensemble.render())
    assert parsed.platform == "ensemble"
    assert [step.model_name for step in parsed.ensemble_scheduling.step] == ["m_tokenizer", "m_encoder"]
    params = {k: {"string_value": v.string_value} for k, v in parsed.parameters.items()}
    assert ModelInfo.from_parameters("m", params) == info
