"""Compile the encoder's OpenVINO IR for the CPU: one recipe for the Python backend, the export check and `make bench`.

openvino is imported where it is used: the precision rules (`computed_precision`, `compile_properties`) are pure
and take any object with OpenVINO Core's `get_property`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

if TYPE_CHECKING:
    import openvino as ov

HEAD_PREFIX = "/head/"  # the exported graph's pooling head: its ops' names start with the module's name
KEEP_FP32 = "disable_fp16_compression_0"  # OpenVINO's mark for ops kept out of 16-bit precisions


class Capabilities(Protocol):
    """What the precision rules read of OpenVINO's Core: a device's properties."""

    def get_property(self, device: str, name: str) -> Any: ...


def _core() -> ov.Core:
    import openvino as ov

    return ov.Core()


def cpu_has_bf16(core: Optional[Capabilities] = None) -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), as OpenVINO's CPU plugin reports it."""
    return "BF16" in (core or _core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def computed_precision(precision: str, core: Optional[Capabilities] = None) -> str:
    """What this CPU computes OpenVINO `precision` ("f32", "bf16", "auto") in: bf16 only where it has bf16 units."""
    return "bf16" if precision in ("bf16", "auto") and cpu_has_bf16(core) else "f32"


def compile_properties(precision: str, hint: str, threads: int, core: Capabilities) -> dict[str, Any]:
    """The CPU plugin's properties for `compile_encoder`.

    The precision is always set: OpenVINO would otherwise run bf16 on its own wherever the CPU has bf16 units,
    an fp32 export included.
    """
    properties: dict[str, Any] = {"PERFORMANCE_HINT": hint.upper(),
                                  "INFERENCE_PRECISION_HINT": computed_precision(precision, core)}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    return properties


def read_encoder(path: Path, core: Optional[ov.Core] = None) -> ov.Model:
    """model.xml, with the pooling head (pooling, pooler, normalisation) marked to stay fp32 when the rest runs
    in bf16. The IR cannot carry the mark (OpenVINO does not serialise it), so it is set on every read."""
    model = (core or _core()).read_model(str(path))
    for op in model.get_ops():
        if op.get_friendly_name().startswith(HEAD_PREFIX):
            op.get_rt_info()[KEEP_FP32] = ""
    return model


def compile_encoder(
    model: Union[Path, ov.Model], precision: str = "f32", hint: str = "latency", threads: int = 0
) -> ov.CompiledModel:
    """`model` (model.xml's path, read with `read_encoder`, or a model in memory) compiled for the CPU in
    `precision` ("f32", "bf16", or "auto": bf16 where the CPU has bf16 units) with OpenVINO's `hint`
    ("latency": one stream on every core; "throughput": a stream per core), as `compile_properties` says."""
    import openvino as ov

    core = ov.Core()
    if not isinstance(model, ov.Model):
        model = read_encoder(model, core)
    return core.compile_model(model, "CPU", compile_properties(precision, hint, threads, core))
