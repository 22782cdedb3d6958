"""The encoder as OpenVINO IR (model.xml + model.bin): converted from the exported ONNX graph, and for int8
statically quantised with NNCF, calibrated on the varied corpus, with layers left in fp32 until it is accurate."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from bertserve import contract
from bertserve.errors import ExportError

from ._logging import quiet
from .config import Precision
from .graph import FFN_DOWN_PROJECTION

_log = logging.getLogger("bertserve.export")

# What int8 leaves in fp32, tried in order until the vectors pass the int8 bar: the feed-forward down-projections
# first, then the attention's output, then its projections.
EXCLUSIONS = (
    ("the feed-forward down-projections", FFN_DOWN_PROJECTION),
    ("the feed-forward down-projections and attention outputs", r"/layers\.\d+/(attention/)?output/dense/MatMul"),
    ("everything but the feed-forward up-projections", r"/layers\.\d+/(?!intermediate/).*MatMul.*"),
)


def write_ir(
    onnx_path: Path,
    xml_path: Path,
    precision: Precision,
    corpus: list[dict[str, np.ndarray]],
    accurate: Callable[[list[np.ndarray]], tuple[bool, str]],
    combine: Callable[[list[np.ndarray]], np.ndarray] = lambda outputs: outputs[0],
) -> None:
    """Convert `onnx_path` to `xml_path` (+ .bin) in fp32 weights; int8 is calibrated on `corpus` batches and
    kept only when `accurate` accepts its outputs for them (made one array per batch by `combine`, as `run_ir`)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if precision is Precision.INT8:
        model = _quantize(model, corpus, accurate, combine)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def run_ir(model, batches: list[dict[str, np.ndarray]], precision: str = "f32",
           combine: Callable[[list[np.ndarray]], np.ndarray] = lambda outputs: outputs[0]) -> list[np.ndarray]:
    """What an IR (model.xml's path, or a model in memory) gives for `batches`, compiled as the server does: per batch,
    its outputs (in order) made one array by `combine` (by default the first output, the embeddings)."""
    from bertserve.model_repository.backends.openvino import compile_encoder

    request = compile_encoder(model, precision).create_infer_request()
    return [combine([value.copy() for value in request.infer(batch).values()]) for batch in batches]


def _quantize(model, corpus, accurate, combine):
    import nncf

    names = [op.get_friendly_name() for op in model.get_ops()]
    for label, pattern in EXCLUSIONS:
        kept = [name for name in names if re.fullmatch(pattern, name)]
        _log.info("quantising to int8 with %s in fp32 (%d ops)", label, len(kept))
        with warnings.catch_warnings(), quiet("nncf"):
            warnings.simplefilter("ignore")
            quantized = nncf.quantize(
                model,
                nncf.Dataset(corpus),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=sum(len(batch[contract.INPUT_IDS]) for batch in corpus),
                ignored_scope=nncf.IgnoredScope(names=kept, validate=False),
                # SmoothQuant moves activation outliers into the weights; on BERT it cost accuracy here.
                advanced_parameters=nncf.AdvancedQuantizationParameters(smooth_quant_alpha=-1),
            )
        ok, summary = accurate(run_ir(quantized, corpus, combine=combine))
        _log.info("int8 with %s in fp32: %s", label, summary)
        if ok:
            return quantized
    raise ExportError(f"int8 misses the accuracy bar even with {EXCLUSIONS[-1][0]} in fp32 ({summary}); "
                      "export fp32 or --precision auto instead")

