"""The OpenVINO precision rules, pure: what each export precision computes in, on a CPU with and without bf16
units, and that the precision is always pinned when the encoder is compiled. A fake of OpenVINO's Core stands in
for the CPU, so the bf16 branches run on every machine, not only on AMX or AVX512-BF16 CPUs."""

from __future__ import annotations

import pytest

from bertserve.model_repository.backends.openvino import compile_properties, computed_precision

PRECISIONS = ("f32", "bf16", "auto")
BF16_UNITS = ["FP32", "BF16", "FP16", "INT8", "BIN", "EXPORT_IMPORT"]  # as an AMX CPU reports them
NO_BF16_UNITS = ["FP32", "FP16", "INT8", "BIN", "EXPORT_IMPORT"]  # as an AVX2 CPU reports them


class _FakeCore:
    """OpenVINO Core's `get_property` for a CPU of the given optimisation capabilities."""

    def __init__(self, capabilities: list[str]) -> None:
        self.capabilities = capabilities

    def get_property(self, device: str, name: str) -> list[str]:
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.capabilities


@pytest.mark.parametrize(("capabilities", "computed"), [
    (BF16_UNITS, ("f32", "bf16", "bf16")),
    (["FP32", "BF16"], ("f32", "bf16", "bf16")),
    (NO_BF16_UNITS, ("f32", "f32", "f32")),
    (["FP32"], ("f32", "f32", "f32")),
], ids=["amx", "fp32+bf16", "avx2", "fp32"])
def test_bf16_is_computed_only_where_asked_and_the_cpu_has_bf16_units(capabilities, computed):
    core = _FakeCore(capabilities)
    assert tuple(computed_precision(precision, core) for precision in PRECISIONS) == computed


@pytest.mark.parametrize(("capabilities", "computed"), [
    (BF16_UNITS, {"f32": "f32", "bf16": "bf16", "auto": "bf16"}),
    (NO_BF16_UNITS, {"f32": "f32", "bf16": "f32", "auto": "f32"}),
], ids=["amx", "avx2"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_inference_precision_is_always_pinned(precision, capabilities, computed):
    """Unset, OpenVINO runs bf16 wherever the CPU has bf16 units: an fp32 export would silently lose precision."""
    core = _FakeCore(capabilities)
    assert compile_properties(precision, "throughput", 0, core) == {
        "PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": computed[precision]}
    assert compile_properties(precision, "latency", 3, core) == {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": computed[precision], "INFERENCE_NUM_THREADS": 3}
