"""Compile the encoder's OpenVINO IR for the CPU: one recipe for the Python backend, the export check and `make bench`."""

from __future__ import annotations

from pathlib import Path

import openvino as ov

HEAD_PREFIX = "/head/"  # the exported graph's pooling head: its ops' names start with the module's name
KEEP_FP32 = "disable_fp16_compression_0"  # OpenVINO's mark for ops kept out of 16-bit precisions


def cpu_has_bf16(core: ov.Core | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), as OpenVINO's CPU plugin reports it."""
    return "BF16" in (core or ov.Core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def computed_precision(precision: str, core: ov.Core | None = None) -> str:
    """What this CPU computes OpenVINO `precision` ("f32", "bf16", "auto") in: bf16 only where it has bf16 units."""
    return "bf16" if precision in ("bf16", "auto") and cpu_has_bf16(core) else "f32"


def read_encoder(path: Path, core: ov.Core | None = None) -> ov.Model:
    """model.xml, with the pooling head (pooling, pooler, normalisation) marked to stay fp32 when the rest runs
    in bf16. The IR cannot carry the mark (OpenVINO does not serialise it), so it is set on every read."""
    model = (core or ov.Core()).read_model(str(path))
    for op in model.get_ops():
        if op.get_friendly_name().startswith(HEAD_PREFIX):
            op.get_rt_info()[KEEP_FP32] = ""
    return model


def compile_encoder(
    model: Path | ov.Model, precision: str = "f32", hint: str = "latency", threads: int = 0
) -> ov.CompiledModel:
    """`model` (model.xml's path, read with `read_encoder`, or a model in memory) compiled for the CPU in
    `precision` ("f32", "bf16", or "auto": bf16 where the CPU has bf16 units) with OpenVINO's `hint`
    ("latency": one stream on every core; "throughput": a stream per core).

    The precision is always set: OpenVINO would otherwise run bf16 on its own wherever the CPU has bf16 units.
    """
    core = ov.Core()
    if not isinstance(model, ov.Model):
        model = read_encoder(model, core)
    properties = {"PERFORMANCE_HINT": hint.upper(), "INFERENCE_PRECISION_HINT": computed_precision(precision, core)}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", properties)
