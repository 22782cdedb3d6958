"""Typed Triton model configurations, rendered to `config.pbtxt` through Triton's own protobuf schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb


@dataclass(frozen=True)
class TensorSpec:
    """One input or output; `dims` exclude the batch dimension, -1 is variable."""

    name: str
    data_type: str  # "TYPE_INT64", "TYPE_FP32", "TYPE_STRING", ...
    dims: tuple[int, ...]
    allow_ragged_batch: bool = False
    optional: bool = False


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_microseconds: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    # Backpressure: beyond max_queue_size waiting requests, or after queue_timeout_microseconds waiting,
    # a request is turned away at once (HTTP 503, gRPC UNAVAILABLE) instead of waiting without bound.
    max_queue_size: int = 0  # 0: unbounded
    queue_timeout_microseconds: int = 0  # 0: none


@dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_CPU"  # KIND_CPU, KIND_GPU, or KIND_AUTO (GPU when present)
    gpus: tuple[int, ...] = ()  # KIND_GPU only: `count` instances on each listed GPU
    profiles: tuple[str, ...] = ()  # TensorRT only: the engine's optimisation profiles the instances may use


@dataclass(frozen=True)
class EnsembleStep:
    """One model in an ensemble; maps the step's tensor names to ensemble tensor names."""

    model_name: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    backend: Optional[str] = None  # "python"
    platform: Optional[str] = None  # "ensemble", "onnxruntime_onnx", "tensorrt_plan"
    instance_group: Optional[InstanceGroup] = None
    dynamic_batching: Optional[DynamicBatching] = None
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    tensorrt_accelerator: Optional[str] = None  # ONNX Runtime's TensorRT provider, precision "FP16" or "FP32"
    # Answer a request repeated exactly (same inputs) from Triton's response cache, where the server has one.
    response_cache: bool = False

    def to_proto(self) -> pb.ModelConfig:
        if (self.backend is None) == (self.platform is None):
            raise ValueError(f"model {self.name!r} needs exactly one of backend and platform")
        config = pb.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        if self.backend:
            config.backend = self.backend
        else:
            config.platform = self.platform
            for step in self.ensemble_steps:
                config.ensemble_scheduling.step.add(
                    model_name=step.model_name,
                    model_version=-1,
                    input_map=dict(step.input_map),
                    output_map=dict(step.output_map),
                )
        for spec, target in [(s, config.input) for s in self.inputs] + [(s, config.output) for s in self.outputs]:
            tensor = target.add(name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=list(spec.dims))
            if spec.allow_ragged_batch:
                tensor.allow_ragged_batch = True
            if spec.optional:
                tensor.optional = True
        if self.instance_group:
            config.instance_group.add(
                count=self.instance_group.count,
                kind=pb.ModelInstanceGroup.Kind.Value(self.instance_group.kind),
                gpus=list(self.instance_group.gpus),
                profile=list(self.instance_group.profiles),
            )
        if self.dynamic_batching:
            batching = self.dynamic_batching
            config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
            config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
            if batching.max_queue_size or batching.queue_timeout_microseconds:
                policy = config.dynamic_batching.default_queue_policy
                policy.max_queue_size = batching.max_queue_size
                policy.default_timeout_microseconds = batching.queue_timeout_microseconds
                policy.timeout_action = pb.ModelQueuePolicy.REJECT
                policy.allow_timeout_override = True
        if self.tensorrt_accelerator:
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            accelerator.parameters["precision_mode"] = self.tensorrt_accelerator
        if self.response_cache:
            config.response_cache.enable = True
        for key, value in self.parameters.items():
            config.parameters[key].string_value = value
        return config

    def render(self) -> str:
        """The `config.pbtxt` text."""
        return text_format.MessageToString(self.to_proto())


def parse(text: str) -> pb.ModelConfig:
    """Parse `config.pbtxt` text with Triton's schema (raises on anything Triton would reject as syntax)."""
    return text_format.Parse(text, pb.ModelConfig())
