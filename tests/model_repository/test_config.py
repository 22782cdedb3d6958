"""Generated Triton configs: valid under Triton's protobuf schema, and saying what the design needs."""

from __future__ import annotations

import dataclasses

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from bertserve.errors import ConfigError
from bertserve.info import ModelInfo
from bertserve.model_repository.config import parse
from bertserve.model_repository.deployment import Backend, Deployment, PerformanceHint, Runtime
from bertserve.model_repository.repository import NATIVE_ENCODER_QUEUE_DELAY_US, model_configs


def _info(pooling: str = "mean", precision: str = "fp32", **fields) -> ModelInfo:
    fields = {"dim": 768, **fields}
    return ModelInfo(name="m", source="/models/x", pooling=pooling, layers=(-2, -1), normalize=False,
                     max_seq_len=128, max_batch_size=32, precision=precision, **fields)


# One model of each task (and of each backend where the task's outputs differ by backend).
TASK_MODELS = {
    "embed": _info(),
    "tokens": _info("none"),
    "rerank": _info("cls_pooled", task="rerank", dim=1, labels=("score",)),
    "classify": _info("cls_pooled", task="classify", dim=3, labels=("negative, really", "neutral", "positive")),
    "sparse": _info("max", task="sparse", dim=30522),
    "sparse-native": _info("max", task="sparse", dim=30522, backend="onnxruntime", runtime=""),
}


DEPLOYMENTS = [
    Deployment(),
    Deployment(Backend.PYTHON, instances=2, gpus=(0, 1)),
    Deployment(Backend.PYTHON, runtime=Runtime.TORCH, gpus=(0,), tokenizer_instances=4),
    Deployment(Backend.ONNXRUNTIME),
    Deployment(Backend.ONNXRUNTIME, instances=3, gpus=(1,), tensorrt_accelerator=True),
    Deployment(Backend.TENSORRT, gpus=(0, 2)),
    Deployment(Backend.PYTHON, runtime=Runtime.OPENVINO),
    Deployment(Backend.OPENVINO, runtime=Runtime.OPENVINO, instances=2),
]


def _parameters(config) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d.backend.value}-{d.runtime.value}-{len(d.gpus)}gpus")
@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_configs_say_what_triton_needs(pooling, deployment):
    """Parsed back with Triton's schema: batching, ragged inputs, placement and parameters, per backend."""
    tokenizer, encoder, ensemble = (parse(c.render()) for c in model_configs(_info(pooling), deployment))
    assert [c.name for c in (tokenizer, encoder, ensemble)] == ["m_tokenizer", "m_encoder", "m"]
    assert [c.max_batch_size for c in (tokenizer, encoder, ensemble)] == [32, 32, 32]
    KIND = pb.ModelInstanceGroup.Kind

    assert tokenizer.backend == "python" and tokenizer.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in tokenizer.instance_group] == [(deployment.tokenizer_instances, KIND.KIND_CPU)]
    # Native backends batch only equal shapes: their tokenizer pads each request to a length bucket.
    buckets = {"length_buckets": "" if deployment.backend is Backend.PYTHON else "16,32,64,128"}
    assert _parameters(tokenizer) == {"max_seq_len": "128", "max_request_bytes": str(32 << 20), "cls_token": "[CLS]",
                                      "sep_token": "[SEP]", "unk_token": "[UNK]", "prompts": "{}", "default_prompt_name": "",
                                      **buckets}
    # Backpressure on both steps: a full queue or a long wait turns a request away at once.
    for config in (tokenizer, encoder):
        policy = config.dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds, policy.timeout_action,
                policy.allow_timeout_override) == (512, 10_000_000, pb.ModelQueuePolicy.REJECT, True)

    python = deployment.backend is Backend.PYTHON
    assert (encoder.backend, encoder.platform) == {
        Backend.PYTHON: ("python", ""), Backend.ONNXRUNTIME: ("", "onnxruntime_onnx"),
        Backend.TENSORRT: ("", "tensorrt_plan"), Backend.OPENVINO: ("openvino", "")}[deployment.backend]
    assert encoder.dynamic_batching.max_queue_delay_microseconds == (0 if python else NATIVE_ENCODER_QUEUE_DELAY_US)
    assert [(t.name, t.data_type, list(t.dims), t.allow_ragged_batch) for t in encoder.input] == [
        (name, pb.TYPE_INT64, [-1], python) for name in ("input_ids", "attention_mask", "token_type_ids")]
    assert [(o.name, list(o.dims)) for o in encoder.output] == [("embedding", [-1, 768] if pooling == "none" else [768])]
    group = encoder.instance_group
    kind = KIND.KIND_GPU if deployment.gpus or deployment.backend is Backend.TENSORRT else KIND.KIND_AUTO
    # A TensorRT engine has one profile per bucket; each instance is offered all of them.
    profiles = ["0", "1", "2", "3"] if deployment.backend is Backend.TENSORRT else []
    assert [(g.count, g.kind, list(g.gpus), list(g.profile)) for g in group] == [
        (deployment.instances, kind, list(deployment.gpus), profiles)]
    assert list(encoder.dynamic_batching.preferred_batch_size) == ([16, 32] if profiles else [])
    openvino = {"inference_precision": "f32", "performance_hint": "throughput"} if deployment.runtime is Runtime.OPENVINO else {}
    assert _parameters(encoder) == {
        Backend.PYTHON: {"max_padding_ratio": "1.2", "runtime": deployment.runtime.value, **openvino},
        Backend.OPENVINO: {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "AUTO"},
    }.get(deployment.backend, {})

    assert ensemble.platform == "ensemble" and not ensemble.HasField("dynamic_batching")
    assert {k for k in _parameters(ensemble)} == {f"bertserve.{k}" for k in ModelInfo.__dataclass_fields__}


@pytest.mark.parametrize("model", TASK_MODELS)
def test_ensemble_steps_are_wired_with_matching_tensors(model):
    """Every tensor a step reads exists, with the type and shape its producer gives it; every output is produced."""
    info = TASK_MODELS[model]
    deployment = Deployment(Backend(info.backend)) if info.backend != "python" else Deployment()
    tokenizer, encoder, ensemble = (parse(c.render()) for c in model_configs(info, deployment))
    models = {c.name: c for c in (tokenizer, encoder)}
    available = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        assert set(step.input_map) == set(inputs)
        for name, tensor in step.input_map.items():
            assert available[tensor] == inputs[name], (step.model_name, name)
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        for name, tensor in step.output_map.items():
            available[tensor] = outputs[name]
    assert {t.name: (t.data_type, list(t.dims)) for t in ensemble.output}.items() <= available.items()


@pytest.mark.parametrize("model, outputs", [
    ("rerank", ["logits", "scores"]),
    ("classify", ["logits", "scores"]),
    ("sparse", ["sparse_indices", "sparse_values", "sparse_terms"]),
    ("sparse-native", ["sparse_indices", "sparse_values"]),  # no vocabulary in a native backend: no terms
])
def test_each_task_serves_its_own_outputs(model, outputs):
    """The ensemble returns the task's outputs (contract.Task.outputs) and the tokenizer's counts; a sparse
    model on the Python backend also names its entries' tokens, when asked with return_tokens."""
    info = TASK_MODELS[model]
    tokenizer, encoder, ensemble = (parse(c.render()) for c in model_configs(info, Deployment(Backend(info.backend))))
    assert [o.name for o in encoder.output] == outputs
    assert [o.name for o in ensemble.output] == outputs + ["tokens", "token_count"]
    assert ("return_tokens" in {i.name for i in encoder.input}) == ("sparse_terms" in outputs)
    params = {k: {"string_value": v.string_value} for k, v in ensemble.parameters.items()}
    assert ModelInfo.from_parameters("m", params) == dataclasses.replace(info, source="x")


def test_token_level_model_exposes_mask_and_per_token_vectors():
    _, _, ensemble = model_configs(_info("none"))
    assert [o.name for o in parse(ensemble.render()).output] == ["embedding", "tokens", "token_count", "attention_mask"]


def test_ensemble_records_model_info():
    info = _info()
    _, _, ensemble = model_configs(info)
    parsed = parse(ensemble.render())
    assert parsed.platform == "ensemble"
    assert [step.model_name for step in parsed.ensemble_scheduling.step] == ["m_tokenizer", "m_encoder"]
    params = {k: {"string_value": v.string_value} for k, v in parsed.parameters.items()}
    # Everything but where it came from: the config is readable without a key, so it names the folder, not its path.
    assert params["bertserve.source"] == {"string_value": "x"}
    assert ModelInfo.from_parameters("m", params) == dataclasses.replace(info, source="x")


def test_native_onnxruntime_on_gpus_with_tensorrt_accelerator():
    (deployment,) = [d for d in DEPLOYMENTS if d.tensorrt_accelerator]
    _, encoder, _ = model_configs(_info(precision="fp16"), deployment)
    parsed = parse(encoder.render())
    accelerator = parsed.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


@pytest.mark.parametrize(
    "options",
    [{"instances": 0}, {"tokenizer_instances": 0}, {"gpus": (-1,)}, {"backend": Backend.PYTHON, "tensorrt_accelerator": True},
     {"max_padding_ratio": 0.5}, {"max_queue_size": -1}, {"queue_timeout": -1.0}, {"max_request_bytes": 0},
     {"backend": Backend.OPENVINO}, {"backend": Backend.ONNXRUNTIME, "runtime": Runtime.OPENVINO},
     {"backend": Backend.OPENVINO, "runtime": Runtime.TORCH}],
)
def test_bad_deployments_are_refused(options):
    with pytest.raises(ConfigError):
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


def test_queue_bounds_can_be_turned_off():
    tokenizer, encoder, _ = (parse(c.render()) for c in model_configs(_info(), Deployment(max_queue_size=0,
                                                                                           queue_timeout=0)))
    assert not tokenizer.dynamic_batching.HasField("default_queue_policy")
    assert not encoder.dynamic_batching.HasField("default_queue_policy")


@pytest.mark.parametrize(("precision", "inference"), [("fp32", "f32"), ("bf16", "bf16"), ("auto", "auto"), ("int8", "f32")])
def test_openvino_precision_and_hint_reach_the_encoder(precision, inference):
    """The Python backend pins OpenVINO's precision (it would pick bf16 itself on bf16 CPUs); the native backend
    can only ask for bf16, and leaves auto to OpenVINO's own choice."""
    deployment = Deployment(runtime=Runtime.OPENVINO, performance_hint=PerformanceHint.LATENCY)
    _, python_encoder, _ = model_configs(_info(precision=precision), deployment)
    assert _parameters(parse(python_encoder.render())) == {
        "max_padding_ratio": "1.2", "runtime": "openvino", "inference_precision": inference, "performance_hint": "latency"}
    native = Deployment(Backend.OPENVINO, runtime=Runtime.OPENVINO, performance_hint=PerformanceHint.LATENCY)
    _, native_encoder, _ = model_configs(_info(precision=precision), native)
    assert _parameters(parse(native_encoder.render())) == {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "AUTO", **({"HINT_BF16": "YES"} if precision == "bf16" else {})}
    assert native.encoder_files == deployment.encoder_files == ("model.xml", "model.bin")
