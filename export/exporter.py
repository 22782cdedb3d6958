"""`export_model`: a Hugging Face BERT folder -> a Triton model repository entry."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from bertserve.contract import Task
from bertserve.info import ModelInfo
from bertserve.model_repository.deployment import Backend
from bertserve.model_repository.repository import existing_models, write_model

from .config import ExportConfig, Precision, plan_export
from .encoder import export_encoder
from .tensorrt import build_engine, require_tensorrt
from .tokenizer import build_tokenizer

_log = logging.getLogger("bertserve.export")


def export_model(config: ExportConfig) -> ModelInfo:
    """Export `config.model_dir` into `config.repository` and return what was written.

    Writes an ensemble named `name` (strings in, the task's outputs out) and its tokenizer
    and encoder models; the graph is checked against transformers before
    anything is placed in the repository.
    """
    started = time.monotonic()
    plan = plan_export(config)
    backend = plan.deployment.backend
    # Refusals come before the export work, not after it.
    existing_models(plan.repository, plan.name, plan.overwrite)
    if backend is Backend.TENSORRT:
        require_tensorrt()
    for note in plan.notes:
        _log.info("%s", note)
    head = (f"pooling {plan.pooling.value} over layers {list(plan.layers)}, normalize={plan.normalize}"
            if plan.task is Task.EMBED else f"the {plan.task.value} head" + (f" (labels {list(plan.labels)})"
                                                                               if plan.labels else ""))
    _log.info(
        "exporting %s as %r: %s, max_seq_len %d, %s for the %s backend%s",
        plan.transformer_dir, plan.name, head, plan.max_seq_len,
        plan.precision.value, backend.value, f" ({plan.deployment.runtime.value})" if backend is Backend.PYTHON else "",
    )
    if plan.prompts:
        _log.info("prompts %s, %s", dict(plan.prompts), f"{plan.default_prompt_name!r} by default"
                  if plan.default_prompt_name else "none by default")
    prepared = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input, plan.lowercase)
    with tempfile.TemporaryDirectory(prefix="bertserve-export-") as scratch:
        encoder_dir = Path(scratch)
        encoder_file = encoder_dir / ("model.onnx" if backend is Backend.TENSORRT else plan.deployment.encoder_files[0])
        # TensorRT gets the fp32 graph and lowers precision itself (with fp32 LayerNorm where needed).
        onnx_precision = Precision.FP32 if backend is Backend.TENSORRT else plan.precision
        encoder = export_encoder(plan, prepared, encoder_file, onnx_precision)
        if backend is Backend.TENSORRT:
            build_engine(encoder_file, encoder_dir / "model.plan", plan.max_batch_size,
                         plan.max_seq_len, fp16=plan.precision is Precision.FP16)
        info = ModelInfo(
            name=plan.name,
            source=str(config.model_dir),
            dim=encoder.dim,
            pooling=plan.pooling.value,
            layers=plan.layers,
            normalize=plan.normalize,
            max_seq_len=plan.max_seq_len,
            max_batch_size=plan.max_batch_size,
            mask_cls_sep=plan.mask_cls_sep,
            precision=plan.precision.value,
            backend=backend.value,
            runtime=plan.deployment.runtime.value if backend in (Backend.PYTHON, Backend.OPENVINO) else "",
            task=plan.task.value,
            labels=plan.labels,
            prompts=dict(plan.prompts),
            default_prompt_name=plan.default_prompt_name,
            quantization_ranges=encoder.quantization_ranges,
        )
        write_model(plan.repository, info, plan.deployment, encoder_dir, prepared.tokenizer,
                    prepared.special_tokens, plan.overwrite)
    _log.info("wrote %s to %s in %.1f s (dim %d)", plan.name, plan.repository, time.monotonic() - started,
              encoder.dim)
    return info
