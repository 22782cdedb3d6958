"""Export the encoder graph (ONNX; OpenVINO IR for the openvino runtime; TorchScript for the torch runtime) and
check it against transformers."""

from __future__ import annotations

import copy
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from bertserve import contract
from bertserve.errors import ExportError
from bertserve.model_repository.deployment import Runtime
from bertserve.model_repository.repository import TOKEN_TENSORS, openvino_precision

from . import openvino
from ._logging import quiet
from .config import ExportPlan, Precision
from .corpus import sentences
from .graph import FFN_DOWN_PROJECTION, EncoderGraph
from .pooling import Pooling
from .tokenizer import PreparedTokenizer, encoder_inputs

INPUT_NAMES = TOKEN_TENSORS
OUTPUT_NAME = contract.EMBEDDING
TOLERANCE = 1e-4  # fp32: max abs difference to transformers
# Reduced precision: cosine similarity of the vectors to transformers' fp32 ones, (smallest, mean).
MIN_COSINE = {Precision.FP16: (0.999, 0.999), Precision.BF16: (0.999, 0.999), Precision.INT8: (0.95, 0.99)}
OPSET = 17
_BF16_SAMPLE = 4  # every 4th sentence of the corpus is checked in emulated bf16

_log = logging.getLogger("bertserve.export")

# Short, long, pair-free sentences of different lengths: they exercise padding in the checked batch.
_CHECK_SENTENCES = [
    "Hello world!",
    "BERT turns sentences into fixed-length vectors, and padding must never count.",
    "短句",
    "A somewhat longer sentence, with punctuation; numbers like 3.14159 and an emoji 🙂 to tokenize.",
]


def load_bert(plan: ExportPlan) -> torch.nn.Module:
    """The transformers BertModel in eval mode: eager attention for ONNX (traceable, exact), PyTorch's
    scaled dot-product attention (fused kernels on GPUs) for the torch runtime."""
    from transformers import BertModel

    attention = "sdpa" if plan.deployment.runtime is Runtime.TORCH else "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bert, loading = BertModel.from_pretrained(
            str(plan.transformer_dir), attn_implementation=attention, output_loading_info=True
        )
    if plan.pooling is Pooling.CLS_POOLED and any(key.startswith("pooler.") for key in loading["missing_keys"]):
        raise ExportError(
            f"{plan.transformer_dir} has no trained BERT pooler weights, so cls_pooled would be random; "
            "choose another --pooling"
        )
    return bert.eval()


def export_encoder(plan: ExportPlan, prepared: PreparedTokenizer, path: Path, precision: Precision) -> int:
    """Write the encoder to `path` in `precision` (ONNX, OpenVINO IR or TorchScript, as the runtime needs), validate it
    against transformers' fp32 hidden states, and return the embedding dimension."""
    bert = load_bert(plan)
    tokenizer = prepared.tokenizer
    excluded = (prepared.cls_id, prepared.sep_id) if plan.mask_cls_sep else ()
    try:
        graph = EncoderGraph(bert, plan.layers, plan.pooling, plan.normalize, excluded).eval()
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    check = encoder_inputs(tokenizer, _CHECK_SENTENCES[::-1] + ["x " * 600])
    want = _reference(bert, graph, check)  # before any precision change: the reference is fp32
    if precision is Precision.FP16:
        graph.half_encoder()
    sample = encoder_inputs(tokenizer, _CHECK_SENTENCES)
    _log.info("exporting %d of %d encoder layers", len(graph.layers), len(bert.encoder.layer))
    if plan.deployment.runtime is Runtime.TORCH:
        _write_torchscript(graph, sample, path)
        got = _torchscript_output(path, check, precision)
    elif plan.deployment.runtime is Runtime.OPENVINO:
        got, want, precision = _export_openvino(plan, bert, graph, sample, path, precision, tokenizer, check, want)
    else:
        _write_onnx(graph, sample, path, plan.pooling)
        if precision is Precision.INT8:
            _quantize(path)
        got = _onnx_output(path, check)
    _validate(got, want, precision)
    return int(graph.head.pooling.output_dim(len(plan.layers) * bert.config.hidden_size))


def _export_openvino(plan, bert, graph, sample, path, precision, tokenizer, check, check_want):
    """Write the IR; return its vectors and the reference ones for `check` (and, for reduced precisions, the
    varied corpus), with the precision to judge them in: the one OpenVINO computes in on this CPU. bf16 is
    also checked emulated in PyTorch, so that a CPU without bf16 units refuses what bf16 units would serve badly."""
    reduced = precision in (Precision.BF16, Precision.AUTO, Precision.INT8)
    corpus = _corpus_batches(tokenizer) if reduced else []
    want = [_reference(bert, graph, batch) for batch in corpus]
    if precision in (Precision.BF16, Precision.AUTO):
        # Emulated bf16 is slow on CPUs without bf16 units: a sample of every length the corpus holds.
        sample_rows = [{name: value[::_BF16_SAMPLE] for name, value in batch.items()} for batch in corpus]
        _log.info("checking the encoder in bf16, emulated in PyTorch, on %d sentences of the corpus",
                  sum(len(batch[contract.INPUT_IDS]) for batch in sample_rows))
        emulated = copy.deepcopy(graph).half_encoder(torch.bfloat16)
        with torch.no_grad():
            got = [emulated(*(torch.from_numpy(b[name]) for name in INPUT_NAMES)).numpy() for b in sample_rows]
        _validate(np.concatenate(got), np.concatenate([w[::_BF16_SAMPLE] for w in want]), Precision.BF16)

    def accurate(vectors: list[np.ndarray]) -> tuple[bool, str]:
        cosines, (min_bound, mean_bound) = _cosines(np.concatenate(vectors), np.concatenate(want)), MIN_COSINE[Precision.INT8]
        summary = f"cosine to fp32 min {cosines.min():.5f}, mean {cosines.mean():.5f}"
        return bool(cosines.min() >= min_bound and cosines.mean() >= mean_bound), summary

    onnx_path = path.with_suffix(".onnx")
    _write_onnx(graph, sample, onnx_path, plan.pooling)
    openvino.write_ir(onnx_path, path, precision, corpus, accurate)
    onnx_path.unlink()
    from bertserve.model_repository.backends.openvino import computed_precision

    computed = computed_precision(openvino_precision(precision.value))
    if precision is not Precision.INT8:
        _log.info("this CPU runs the %s export in %s", precision.value, computed)
        precision = Precision.BF16 if computed == "bf16" else Precision.FP32
    got = openvino.run_ir(path, corpus + [check], computed)
    return np.concatenate(got), np.concatenate(want + [check_want]), precision


def _corpus_batches(tokenizer) -> list[dict[str, np.ndarray]]:
    """The varied corpus in batches of 16 sentences of similar length, as the server batches them."""
    texts = sorted(sentences(), key=lambda text: len(tokenizer.encode(text).ids))
    return [encoder_inputs(tokenizer, texts[i : i + 16]) for i in range(0, len(texts), 16)]


def _write_onnx(graph: EncoderGraph, sample: dict[str, np.ndarray], path: Path, pooling: Pooling) -> None:
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic[OUTPUT_NAME] = {0: "batch", 1: "sequence"} if pooling is Pooling.NONE else {0: "batch"}
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


def _write_torchscript(graph: EncoderGraph, sample: dict[str, np.ndarray], path: Path) -> None:
    """Trace the graph on the CPU; the torch runtime loads it onto the instance's device."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES), check_trace=False)
    traced.save(str(path))


def _validate(got: np.ndarray, want: np.ndarray, precision: Precision) -> None:
    """Refuse an encoder that strays from transformers: fp32 by absolute difference, others by cosine."""
    _log.info("validating the exported encoder against transformers' hidden states")
    if precision in MIN_COSINE:
        cosines, (min_bound, mean_bound) = _cosines(got, want), MIN_COSINE[precision]
        if not (cosines.min() >= min_bound and cosines.mean() >= mean_bound):
            raise ExportError(
                f"the {precision.value} graph's vectors reach cosine {cosines.min():.5f} (mean {cosines.mean():.5f}) "
                f"to fp32, below {min_bound} (mean {mean_bound}); use fp32"
            )
        _log.info("%s encoder matches transformers (cosine min %.5f, mean %.5f)",
                  precision.value, cosines.min(), cosines.mean())
    else:
        error = float(np.abs(got - want).max())
        if not error <= TOLERANCE:
            raise ExportError(f"the exported graph differs from transformers by {error:.2e} (> {TOLERANCE}); please report this")
        _log.info("encoder matches transformers (max abs difference %.1e)", error)


def _quantize(path: Path) -> None:
    """int8 per-channel weights for the encoder's weight matrices, activations quantised on the fly.

    The feed-forward down-projections stay fp32: their inputs carry outliers
    that int8 flattens (mean cosine to fp32 0.9895 quantised, 0.994 kept).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name("model-fp32.onnx")
    path.rename(fp32)
    keep = [n.name for n in onnx.load(str(fp32)).graph.node if re.fullmatch(FFN_DOWN_PROJECTION, n.name)]
    with warnings.catch_warnings(), quiet("root"):
        warnings.simplefilter("ignore")
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, nodes_to_exclude=keep, extra_options={"MatMulConstBOnly": True})
    fp32.unlink()


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching vectors (token rows for per-token output; padding rows skipped)."""
    got, want = got.reshape(-1, got.shape[-1]).astype(np.float64), want.reshape(-1, want.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    real = norms > 0
    return (got * want).sum(axis=1)[real] / norms[real]


def _reference(bert: torch.nn.Module, graph: EncoderGraph, batch: dict[str, np.ndarray]) -> np.ndarray:
    """What the graph must compute: transformers' own fp32 hidden states through the pooling head."""
    tensors = {name: torch.from_numpy(value) for name, value in batch.items()}
    with torch.no_grad():
        hidden = bert(**tensors, output_hidden_states=True).hidden_states
        features = torch.cat([hidden[i] for i in graph.indices], dim=-1)
        mask = graph.pooling_mask(tensors[contract.INPUT_IDS], tensors[contract.ATTENTION_MASK])
        return graph.head(features, mask).numpy()


def _torchscript_output(path: Path, batch: dict[str, np.ndarray], precision: Precision) -> np.ndarray:
    """Run the saved TorchScript file as the runtime will: fp16 on a GPU when there is one (CPUs are slow at it)."""
    device = "cuda" if precision is Precision.FP16 and torch.cuda.is_available() else "cpu"
    module = torch.jit.load(str(path), map_location=device)
    with torch.inference_mode():
        return module(*(torch.from_numpy(batch[name]).to(device) for name in INPUT_NAMES)).float().cpu().numpy()


def _onnx_output(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], batch)[0]
