"""Compact vectors: float32 embeddings as int8 or uint8 codes, or as packed sign bits, computed exactly as
sentence-transformers' `quantize_embeddings` computes them.

int8 and uint8 map each dimension's range to 256 steps. The ranges are calibrated once, at export, on the varied
corpus, and recorded with the model (`ModelInfo.quantization_ranges`): the same text always gets the same codes,
whatever else is in its request. binary and ubinary keep one bit per dimension (positive or not), 8 to a byte.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional, Sequence, Union

import numpy as np

from .errors import InvalidInputError


class OutputDtype(str, Enum):
    """What a vector is returned as."""

    FLOAT32 = "float32"
    INT8 = "int8"  # 256 steps over the calibrated range of each dimension, -128..127
    UINT8 = "uint8"  # the same steps, 0..255
    BINARY = "binary"  # sign bits, 8 dimensions per byte, as int8 (byte - 128)
    UBINARY = "ubinary"  # sign bits, 8 dimensions per byte, as uint8

    @property
    def calibrated(self) -> bool:
        """Whether it needs the model's calibrated ranges."""
        return self in (OutputDtype.INT8, OutputDtype.UINT8)

    @property
    def packed(self) -> bool:
        """Whether a vector of `dim` dimensions becomes ceil(dim / 8) bytes."""
        return self in (OutputDtype.BINARY, OutputDtype.UBINARY)


def output_dtype(value: Union[str, OutputDtype]) -> OutputDtype:
    """`value` as an OutputDtype, or an InvalidInputError naming it and the choices."""
    try:
        return OutputDtype(value)
    except ValueError:
        choices = ", ".join(repr(d.value) for d in OutputDtype)
        raise InvalidInputError(f"output_dtype {value!r} is not one of {choices}") from None


def quantize(vectors: np.ndarray, dtype: Union[str, OutputDtype],
             ranges: Optional[Sequence[Sequence[float]]] = None) -> np.ndarray:
    """`vectors` (float32, the last axis the dimensions) as `dtype`; int8 and uint8 need `ranges`, the per-dimension
    minimum and maximum rows the export calibrated."""
    dtype = output_dtype(dtype)
    vectors = np.asarray(vectors, np.float32)
    if dtype is OutputDtype.FLOAT32:
        return vectors
    if dtype.packed:
        bits = np.packbits(vectors > 0, axis=-1)
        return (bits - 128).astype(np.int8) if dtype is OutputDtype.BINARY else bits
    if ranges is None or len(ranges) != 2 or len(ranges[0]) != vectors.shape[-1]:
        raise InvalidInputError(f"output_dtype {dtype.value!r} needs the model's calibrated ranges, which its export "
                                "did not record; export the model again with this version of bertserve")
    limits = np.asarray(ranges, np.float32)
    starts = limits[0]
    steps = (limits[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    codes = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return codes.astype(np.uint8) if dtype is OutputDtype.UINT8 else (codes - 128).astype(np.int8)


def calibration_ranges(vectors: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each dimension's minimum and maximum over `vectors` (the export's vectors of the varied corpus), as float32
    values written with enough digits to come back exactly."""
    flat = np.asarray(vectors, np.float32).reshape(-1, vectors.shape[-1])
    return tuple(tuple(float(f"{v:.9g}") for v in row) for row in (flat.min(axis=0), flat.max(axis=0)))
