"""Generated Triton configs: valid under Triton's protobuf schema, and saying what the design needs."""

from __future__ import annotations

import pytest

from bertserve.info import ModelInfo
from bertserve.model_repository.config import parse
from bertserve.model_repository.deployment import Backend, Deployment
from bertserve.model_repository.repository import model_configs


def _info(pooling: str = "mean", precision: str = "fp32") -> ModelInfo:
    return ModelInfo(name="m", source="/x", dim=768, pooling=pooling, layers=(-2, -1), normalize=False,
                     max_seq_len=128, max_batch_size=32, precision=precision)


DEPLOYMENTS = [
    Deployment(),
    Deployment(Backend.PYTHON, instances=2, gpus=(0, 1)),
    Deployment(Backend.ONNXRUNTIME),
    Deployment(Backend.ONNXRUNTIME, instances=3, gpus=(1,), tensorrt_accelerator=True),
    Deployment(Backend.TENSORRT, gpus=(0, 2)),
]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d.backend.value}-{len(d.gpus)}gpus")
@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_configs_round_trip_through_triton_schema(pooling, deployment):
    for config in model_configs(_info(pooling), deployment):
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
    assert [o.name for o in parse(ensemble.render()).output] == ["embedding", "tokens", "token_count", "attention_mask"]


def test_ensemble_records_model_info():
    info = _info()
    _, _, ensemble = model_configs(info)
    parsed = parse(ensemble.render())
    assert parsed.platform == "ensemble"
    assert [step.model_name for step in parsed.ensemble_scheduling.step] == ["m_tokenizer", "m_encoder"]
    params = {k: {"string_value": v.string_value} for k, v in parsed.parameters.items()}
    assert ModelInfo.from_parameters("m", params) == info


def test_native_onnxruntime_on_gpus_with_tensorrt_accelerator():
    _, encoder, _ = model_configs(_info(precision="fp16"), DEPLOYMENTS[3])
    parsed = parse(encoder.render())
    assert parsed.platform == "onnxruntime_onnx" and not parsed.backend
    assert not any(tensor.allow_ragged_batch for tensor in parsed.input)  # the native backend stacks equal shapes
    group = parsed.instance_group[0]
    assert (group.count, list(group.gpus), group.kind) == (3, [1], parsed.instance_group[0].KIND_GPU)
    accelerator = parsed.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


def test_tensorrt_plan_prefers_its_profile_batch_sizes():
    _, encoder, _ = model_configs(_info(), DEPLOYMENTS[4])
    parsed = parse(encoder.render())
    assert parsed.platform == "tensorrt_plan"
    assert list(parsed.dynamic_batching.preferred_batch_size) == [16, 32]
    assert parsed.instance_group[0].kind == parsed.instance_group[0].KIND_GPU


def test_python_backend_without_gpu_list_goes_where_triton_finds_a_device():
    _, encoder, _ = model_configs(_info(), Deployment())
    assert parse(encoder.render()).instance_group[0].kind == parse(encoder.render()).instance_group[0].KIND_AUTO


@pytest.mark.parametrize(
    "options",
    [{"instances": 0}, {"gpus": (-1,)}, {"backend": Backend.PYTHON, "tensorrt_accelerator": True},
     {"max_padding_ratio": 0.5}],
)
def test_bad_deployments_are_refused(options):
    with pytest.raises(ValueError):
        Deployment(**options)


def test_pairs_and_pre_tokenized_input_are_optional_ensemble_inputs():
    tokenizer, _, ensemble = model_configs(_info())
    for config in (parse(tokenizer.render()), parse(ensemble.render())):
        inputs = {t.name: t for t in config.input}
        assert not inputs["text"].optional
        assert inputs["text_pair"].optional and inputs["is_tokenized"].optional
    assert dict(parse(tokenizer.render()).parameters)["cls_token"].string_value == "[CLS]"


def test_length_grouping_is_a_python_backend_parameter():
    _, python_encoder, _ = model_configs(_info(), Deployment(max_padding_ratio=1.5))
    _, native_encoder, _ = model_configs(_info(), Deployment(Backend.ONNXRUNTIME))
    assert parse(python_encoder.render()).parameters["max_padding_ratio"].string_value == "1.5"
    assert "max_padding_ratio" not in parse(native_encoder.render()).parameters
