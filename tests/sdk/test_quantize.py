"""Compact vectors against sentence-transformers' quantize_embeddings: bit for bit, for every dtype."""

from __future__ import annotations

import numpy as np
import pytest

from bertserve.errors import InvalidInputError
from bertserve.quantize import OutputDtype, calibration_ranges, quantize

pytestmark = pytest.mark.server  # sentence-transformers brings torch

RNG = np.random.default_rng(0)
CALIBRATION = RNG.normal(size=(200, 20)).astype(np.float32)
# Inside the calibrated range, past both ends of it, exact zeros (no sign bit), and a dimension count that does not
# fill the last byte.
VECTORS = np.concatenate([RNG.normal(size=(30, 20)), 4 * RNG.normal(size=(5, 20)), np.zeros((1, 20))]).astype(np.float32)


@pytest.mark.parametrize("dtype", list(OutputDtype))
def test_every_dtype_equals_quantize_embeddings(dtype):
    from sentence_transformers.util.quantization import quantize_embeddings

    ranges = calibration_ranges(CALIBRATION)
    want = quantize_embeddings(VECTORS, precision=dtype.value, calibration_embeddings=CALIBRATION)
    got = quantize(VECTORS, dtype, ranges)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_the_recorded_ranges_come_back_as_the_same_float32_values():
    ranges = calibration_ranges(CALIBRATION)
    assert np.array_equal(np.asarray(ranges, np.float32), np.vstack([CALIBRATION.min(0), CALIBRATION.max(0)]))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_calibrated_dtypes_need_the_models_ranges(dtype):
    with pytest.raises(InvalidInputError, match=f"output_dtype '{dtype}' needs the model's calibrated ranges"):
        quantize(VECTORS, dtype, None)


def test_an_unknown_dtype_is_named():
    with pytest.raises(InvalidInputError, match="output_dtype 'int4' is not one of 'float32', 'int8'"):
        quantize(VECTORS, "int4")
