"""The export default follows the CPU: OpenVINO bf16 where it has bf16 units, ONNX Runtime fp32 elsewhere."""

from __future__ import annotations

import pytest

from bertserve.export import Precision, Runtime, default_encoder


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma", "amx_bf16", "amx_tile"}, (Runtime.OPENVINO, Precision.AUTO)),
    ({"avx2", "avx512f", "avx512_bf16"}, (Runtime.OPENVINO, Precision.AUTO)),
    ({"avx2", "fma", "avx512f", "avx512_vnni"}, (Runtime.ONNXRUNTIME, Precision.FP32)),  # VNNI is int8, not bf16
    (set(), (Runtime.ONNXRUNTIME, Precision.FP32)),
])
def test_the_default_encoder_follows_the_cpus_bf16_units(flags, expected):
    assert default_encoder(frozenset(flags)) == expected
