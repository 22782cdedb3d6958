"""Export the encoder graph to ONNX and check it against transformers' own hidden states."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from bertserve.errors import ExportError

from .config import ExportPlan
from .graph import EncoderGraph
from .pooling import Pooling

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "embedding"
TOLERANCE = 1e-4
OPSET = 17

_log = logging.getLogger("bertserve.export")

# Short, long, pair-free sentences of different lengths: they exercise padding in the checked batch.
_CHECK_SENTENCES = [
    "Hello world!",
    "BERT turns sentences into fixed-length vectors, and padding must never count.",
    "短句",
    "A somewhat longer sentence, with punctuation; numbers like 3.14159 and an emoji 🙂 to tokenize.",
]


def load_bert(plan: ExportPlan) -> torch.nn.Module:
    """The transformers BertModel in eval mode, with eager attention (traceable, exact)."""
    from transformers import BertModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bert, loading = BertModel.from_pretrained(
            str(plan.transformer_dir), attn_implementation="eager", output_loading_info=True
        )
    if plan.pooling is Pooling.CLS_POOLED and any(key.startswith("pooler.") for key in loading["missing_keys"]):
        raise ExportError(
            f"{plan.transformer_dir} has no trained BERT pooler weights, so cls_pooled would be random; "
            "choose another --pooling"
        )
    return bert.eval()


def export_encoder(plan: ExportPlan, tokenizer: Tokenizer, path: Path) -> int:
    """Write the ONNX encoder to `path`, validate it, and return the embedding dimension."""
    bert = load_bert(plan)
    try:
        graph = EncoderGraph(bert, plan.layers, plan.pooling, plan.normalize).eval()
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    sample = _tokenize(tokenizer, _CHECK_SENTENCES)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic[OUTPUT_NAME] = {0: "batch", 1: "sequence"} if plan.pooling is Pooling.NONE else {0: "batch"}
    _log.info("exporting %d of %d encoder layers to ONNX", len(graph.layers), len(bert.encoder.layer))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _log.info("validating the ONNX graph against transformers' hidden states")
    error = _max_difference(bert, graph, path, tokenizer)
    if not error <= TOLERANCE:
        raise ExportError(f"the exported graph differs from transformers by {error:.2e} (> {TOLERANCE}); please report this")
    _log.info("ONNX graph matches transformers (max abs difference %.1e)", error)
    return int(graph.head.pooling.output_dim(len(plan.layers) * bert.config.hidden_size))


def _tokenize(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def _max_difference(bert: torch.nn.Module, graph: EncoderGraph, path: Path, tokenizer: Tokenizer) -> float:
    import onnxruntime as ort

    sample = _tokenize(tokenizer, _CHECK_SENTENCES[::-1] + ["x " * 600])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], sample)[0]
    tensors = {name: torch.from_numpy(value) for name, value in sample.items()}
    with torch.no_grad():
        hidden = bert(**tensors, output_hidden_states=True).hidden_states
        features = torch.cat([hidden[i] for i in graph.indices], dim=-1)
        want = graph.head(features, tensors["attention_mask"]).numpy()
    return float(np.abs(got - want).max())
