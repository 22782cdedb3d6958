"""`export_model`: a Hugging Face BERT folder -> a Triton model repository entry."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from bertserve.info import ModelInfo
from bertserve.model_repository.repository import write_model

from .config import ExportConfig, plan_export
from .encoder import export_encoder
from .tokenizer import build_tokenizer

_log = logging.getLogger("bertserve.export")


def export_model(config: ExportConfig) -> ModelInfo:
    """Export `config.model_dir` into `config.repository` and return what was written.

    Writes an ensemble named `name` (strings in, vectors out) and its tokenizer
    and encoder models; the ONNX graph is checked against transformers before
    anything is placed in the repository.
    """
    started = time.monotonic()
    plan = plan_export(config)
    _log.info(
        "exporting %s as %r: pooling %s over layers %s, normalize=%s, max_seq_len %d",
        plan.transformer_dir, plan.name, plan.pooling.value, list(plan.layers), plan.normalize, plan.max_seq_len,
    )
    tokenizer = build_tokenizer(plan.transformer_dir, plan.max_seq_len, plan.lowercase_input)
    with tempfile.TemporaryDirectory(prefix="bertserve-export-") as scratch:
        onnx_file = Path(scratch) / "model.onnx"
        dim = export_encoder(plan, tokenizer, onnx_file)
        info = ModelInfo(
            name=plan.name,
            source=str(config.model_dir),
            dim=dim,
            pooling=plan.pooling.value,
            layers=plan.layers,
            normalize=plan.normalize,
            max_seq_len=plan.max_seq_len,
            max_batch_size=plan.max_batch_size,
        )
        write_model(plan.repository, info, onnx_file, tokenizer, plan.overwrite)
    _log.info("wrote %s to %s in %.1f s (dim %d)", plan.name, plan.repository, time.monotonic() - started, dim)
    return info
