"""Export the encoder graph (ONNX; OpenVINO IR for the openvino runtime; TorchScript for the torch runtime) and
check it against transformers.

The graph ends in the task's head (contract.Task): pooling for embed, a sequence-classification head for rerank and
classify, SPLADE's masked-LM head for sparse. Its outputs are the task's, by name (`Task.outputs`).
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import numpy as np
import torch

from bertserve import contract
from bertserve.contract import Task
from bertserve.errors import ExportError
from bertserve.model_repository.deployment import Runtime
from bertserve.model_repository.repository import TOKEN_TENSORS, openvino_precision
from bertserve.quantize import calibration_ranges

from . import openvino
from ._logging import quiet
from .config import ExportPlan, Precision
from .corpus import sentences
from .graph import FFN_DOWN_PROJECTION, EncoderGraph
from .heads import ClassifierGraph, SparseGraph, splade
from .pooling import Pooling
from .tokenizer import PreparedTokenizer, encoder_inputs

INPUT_NAMES = TOKEN_TENSORS
OUTPUT_NAME = contract.EMBEDDING
TOLERANCE = 1e-4  # fp32: max abs difference to transformers (rerank, classify: logits and scores; sparse: the
# vocabulary-sized vectors the entries make up)
# Reduced precision: cosine similarity of the vectors (embed, sparse) to transformers' fp32 ones, (smallest, mean).
MIN_COSINE = {Precision.FP16: (0.999, 0.999), Precision.BF16: (0.999, 0.999), Precision.INT8: (0.95, 0.99)}
# Reduced precision, rerank and classify: max abs difference of the scores (sigmoid, softmax: in [0, 1]) to fp32's.
SCORE_TOLERANCE = {Precision.FP16: 0.01, Precision.BF16: 0.02, Precision.INT8: 0.05}
# Which heads' weights each task reads: an export refuses a folder without them rather than serve a random head.
_HEAD_WEIGHTS = {Task.RERANK: ("classifier.", "bert.pooler."), Task.CLASSIFY: ("classifier.", "bert.pooler."),
                 Task.SPARSE: ("cls.predictions.",)}
Graph = Union[EncoderGraph, ClassifierGraph, SparseGraph]
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
    """The transformers model in eval mode: BertModel for embed, BertForSequenceClassification for rerank and
    classify, BertForMaskedLM for sparse. Eager attention for ONNX (traceable, exact), PyTorch's scaled dot-product
    attention (fused kernels on GPUs) for the torch runtime."""
    import transformers

    kind = {Task.EMBED: transformers.BertModel, Task.RERANK: transformers.BertForSequenceClassification,
            Task.CLASSIFY: transformers.BertForSequenceClassification, Task.SPARSE: transformers.BertForMaskedLM}
    attention = "sdpa" if plan.deployment.runtime is Runtime.TORCH else "eager"
    with warnings.catch_warnings(), quiet("transformers"):
        warnings.simplefilter("ignore")
        bert, loading = kind[plan.task].from_pretrained(
            str(plan.transformer_dir), attn_implementation=attention, output_loading_info=True
        )
    missing = loading["missing_keys"]
    if plan.task is Task.EMBED and plan.pooling is Pooling.CLS_POOLED and any(k.startswith("pooler.") for k in missing):
        raise ExportError(
            f"{plan.transformer_dir} has no trained BERT pooler weights, so cls_pooled would be random; "
            "choose another --pooling"
        )
    absent = sorted({key for key in missing for head in _HEAD_WEIGHTS.get(plan.task, ()) if key.startswith(head)})
    if absent:
        raise ExportError(
            f"{plan.transformer_dir} has no trained weights for the {plan.task.value} head ({', '.join(absent)}), so "
            f"it would be random; export a folder with a {kind[plan.task].__name__} head, or another --task"
        )
    return bert.eval()


def build_graph(plan: ExportPlan, model: torch.nn.Module, excluded_ids: Sequence[int] = ()) -> Graph:
    """The traceable graph of the plan's task over `model` (as `load_bert` loads it)."""
    if plan.task is Task.SPARSE:
        return SparseGraph(model).eval()
    if _scored(plan.task):
        return ClassifierGraph(model, plan.task).eval()
    return EncoderGraph(model, plan.layers, plan.pooling, plan.normalize, excluded_ids).eval()


def check_texts(task: Task) -> list[Union[str, tuple[str, str]]]:
    """What an export validates its graph on: items of different lengths, one past any max_seq_len (for rerank
    (query, document) pairs, one of each side too long, so that longest_first truncation shows)."""
    if task is Task.RERANK:
        queries = _CHECK_SENTENCES + ["x " * 600, "a short query"]
        return list(zip(queries, _CHECK_SENTENCES[::-1] + ["a short document", "y " * 600]))
    return _CHECK_SENTENCES[::-1] + ["x " * 600]


class ExportedEncoder(NamedTuple):
    """What an export of the encoder records in ModelInfo."""

    dim: int  # the width of the task's output
    quantization_ranges: tuple[tuple[float, ...], ...]  # int8 / uint8 calibration; () where not calibrated


def calibrates(plan: ExportPlan) -> bool:
    """Whether the export calibrates int8 and uint8 output: embed models that pool (one vector per item)."""
    return plan.task is Task.EMBED and plan.pooling is not Pooling.NONE


def export_encoder(plan: ExportPlan, prepared: PreparedTokenizer, path: Path, precision: Precision) -> ExportedEncoder:
    """Write the encoder to `path` in `precision` (ONNX, OpenVINO IR or TorchScript, as the runtime needs), validate it
    against transformers' fp32 outputs, and calibrate int8 / uint8 output on its vectors of the varied corpus, computed
    as it is served (`calibrates`)."""
    bert = load_bert(plan)
    tokenizer = prepared.tokenizer
    excluded = (prepared.cls_id, prepared.sep_id) if plan.mask_cls_sep else ()
    try:
        graph = build_graph(plan, bert, excluded)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    vocabulary = int(bert.config.vocab_size)
    check = encoder_inputs(tokenizer, check_texts(plan.task))
    want = _reference(bert, graph, check)  # before any precision change: the reference is fp32
    if precision is Precision.FP16:
        graph.half_encoder()
    # What the graph is traced on (rerank: pairs, so that both segment ids occur).
    sample = encoder_inputs(tokenizer, check_texts(plan.task)[:4] if plan.task is Task.RERANK else _CHECK_SENTENCES)
    _log.info("exporting %d of %d encoder layers%s", len(graph.layers), bert.config.num_hidden_layers,
              "" if plan.task is Task.EMBED else f" and the {plan.task.value} head")
    corpus = _corpus_batches(tokenizer) if calibrates(plan) else []
    if plan.deployment.runtime is Runtime.TORCH:
        _write_torchscript(graph, sample, path)
        got, *vectors = _torchscript_outputs(path, [check, *corpus], precision, plan.task, vocabulary)
    elif plan.deployment.runtime is Runtime.OPENVINO:
        got, want, precision, vectors = _export_openvino(plan, bert, graph, sample, path, precision, tokenizer, check,
                                                         want, corpus)
    else:
        _write_onnx(graph, sample, path, plan.pooling)
        if precision is Precision.INT8:
            _quantize(path)
        got, *vectors = _onnx_outputs(path, [check, *corpus], plan.task, vocabulary)
    _validate(got, want, precision, plan.task)
    ranges = calibration_ranges(np.concatenate(vectors)) if corpus else ()
    if ranges:
        _log.info("calibrated int8 / uint8 output on %d vectors of the varied corpus", sum(map(len, vectors)))
    return ExportedEncoder(output_width(plan, bert), ranges)


def output_width(plan: ExportPlan, model: torch.nn.Module) -> int:
    """ModelInfo.dim: the vector's width (embed), the labels (rerank, classify), the vocabulary (sparse)."""
    if _scored(plan.task):
        return int(model.config.num_labels)
    if plan.task is Task.SPARSE:
        return int(model.config.vocab_size)
    return int(plan.pooling.output_dim(len(plan.layers) * model.config.hidden_size))


def _check_entries(indices: np.ndarray, values: np.ndarray) -> None:
    """Refuse sparse entries laid out otherwise than the contract says: as wide as the fullest row (k computed per
    batch, not fixed when traced), largest first, padding (weight 0) with id 0."""
    real = values > 0
    width = max(1, int(real.sum(axis=1).max()) if len(values) else 1)
    if values.shape[1] != width or (np.diff(values, axis=1) > 0).any() or (indices[~real] != 0).any():
        raise ExportError(f"the exported sparse entries are {values.shape[1]} wide where the fullest row has {width}, "
                          "or are not largest first with id 0 for padding; please report this")


def graph_task(graph: Graph) -> Task:
    """The task a graph's outputs serve."""
    return graph.task if isinstance(graph, ClassifierGraph) else Task.SPARSE if isinstance(graph, SparseGraph) \
        else Task.EMBED


def comparable(task: Task, outputs: Sequence[np.ndarray], vocabulary: int = 0) -> np.ndarray:
    """A graph's outputs as one array to compare with transformers': the vectors (embed), logits and scores side by
    side (rerank, classify), the vocabulary-sized vectors the entries make up (sparse; a padding entry adds 0)."""
    if task is Task.SPARSE:
        indices, values = (np.asarray(o) for o in outputs)
        _check_entries(indices, values)
        dense = np.zeros((len(indices), vocabulary), np.float32)
        np.add.at(dense, (np.arange(len(indices))[:, None], indices), values.astype(np.float32))
        return dense
    if _scored(task):
        return np.concatenate([np.asarray(o, np.float32) for o in outputs], axis=-1)
    return np.asarray(outputs[0])


def _export_openvino(plan, bert, graph, sample, path, precision, tokenizer, check, check_want, calibration):
    """Write the IR; return its vectors and the reference ones for `check` (and, for reduced precisions, the
    varied corpus), with the precision to judge them in: the one OpenVINO computes in on this CPU, and its vectors
    of the `calibration` batches (the varied corpus, or none) computed so. bf16 is also checked emulated in PyTorch,
    so that a CPU without bf16 units refuses what bf16 units would serve badly."""
    reduced = precision in (Precision.BF16, Precision.AUTO, Precision.INT8)
    corpus = (calibration or _corpus_batches(tokenizer, plan.task)) if reduced else calibration
    vocabulary = int(bert.config.vocab_size)
    task = plan.task
    want = [_reference(bert, graph, batch) for batch in corpus] if reduced else []
    if precision in (Precision.BF16, Precision.AUTO):
        # Emulated bf16 is slow on CPUs without bf16 units: a sample of every length the corpus holds.
        sample_rows = [{name: value[::_BF16_SAMPLE] for name, value in batch.items()} for batch in corpus]
        _log.info("checking the encoder in bf16, emulated in PyTorch, on %d sentences of the corpus",
                  sum(len(batch[contract.INPUT_IDS]) for batch in sample_rows))
        emulated = copy.deepcopy(graph).half_encoder(torch.bfloat16)
        with torch.no_grad():
            got = [_run_graph(emulated, b, task, vocabulary) for b in sample_rows]
        _validate(np.concatenate(got), np.concatenate([w[::_BF16_SAMPLE] for w in want]), Precision.BF16, task)

    def accurate(vectors: list[np.ndarray]) -> tuple[bool, str]:
        return _accuracy(np.concatenate(vectors), np.concatenate(want), Precision.INT8, task)

    onnx_path = path.with_suffix(".onnx")
    _write_onnx(graph, sample, onnx_path, plan.pooling)
    combine = lambda outputs: comparable(task, outputs, vocabulary)  # noqa: E731
    openvino.write_ir(onnx_path, path, precision, corpus, accurate, combine)
    onnx_path.unlink()
    from bertserve.model_repository.backends.openvino import computed_precision

    computed = computed_precision(openvino_precision(precision.value))
    if precision is not Precision.INT8:
        _log.info("this CPU runs the %s export in %s", precision.value, computed)
        precision = Precision.BF16 if computed == "bf16" else Precision.FP32
    got = openvino.run_ir(path, [check] + corpus, computed, combine)
    checked = got[: 1 + len(want)]  # reduced precisions: the corpus too
    # Sparse vectors of different batches are as wide as the vocabulary: they stack like the others.
    return np.concatenate(checked), np.concatenate([check_want] + want), precision, got[1:] if calibration else []


def _corpus_batches(tokenizer, task: Task = Task.EMBED) -> list[dict[str, np.ndarray]]:
    """The varied corpus in batches of 16 sentences of similar length, as the server batches them (rerank: pairs
    of neighbouring sentences)."""
    texts: list = sorted(sentences(), key=lambda text: len(tokenizer.encode(text).ids))
    if task is Task.RERANK:
        texts = list(zip(texts[::2], texts[1::2]))
    return [encoder_inputs(tokenizer, texts[i : i + 16]) for i in range(0, len(texts), 16)]


def _write_onnx(graph: Graph, sample: dict[str, np.ndarray], path: Path, pooling: Pooling) -> None:
    task = graph_task(graph)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    if task is Task.SPARSE:  # k, the entries' width, is computed per batch
        dynamic.update({name: {0: "batch", 1: "entries"} for name in task.outputs})
    elif task is Task.EMBED:
        dynamic[OUTPUT_NAME] = {0: "batch", 1: "sequence"} if pooling is Pooling.NONE else {0: "batch"}
    else:
        dynamic.update({name: {0: "batch"} for name in task.outputs})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(task.outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _write_torchscript(graph: Graph, sample: dict[str, np.ndarray], path: Path) -> None:
    """Trace the graph on the CPU; the torch runtime loads it onto the instance's device."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES), check_trace=False)
    traced.save(str(path))


def _validate(got: np.ndarray, want: np.ndarray, precision: Precision, task: Task = Task.EMBED) -> None:
    """Refuse an encoder that strays from transformers: fp32 by absolute difference; others by cosine (embed,
    sparse) or by the scores' absolute difference (rerank, classify)."""
    _log.info("validating the exported encoder against transformers")
    if got.shape != want.shape:
        raise ExportError(f"the exported graph's output has shape {got.shape}, transformers' {want.shape}; "
                          "please report this")
    ok, summary = _accuracy(got, want, precision, task)
    if ok:
        _log.info("%s encoder matches transformers (%s)", precision.value, summary)
    elif precision not in MIN_COSINE:
        error = float(np.abs(got - want).max())
        raise ExportError(f"the exported graph differs from transformers by {error:.2e} (> {TOLERANCE}); please report this")
    elif _scored(task):
        raise ExportError(f"the {precision.value} graph's {summary}; use fp32")
    else:
        cosines, (min_bound, mean_bound) = _cosines(got, want), MIN_COSINE[precision]
        raise ExportError(
            f"the {precision.value} graph's vectors reach cosine {cosines.min():.5f} (mean {cosines.mean():.5f}) "
            f"to fp32, below {min_bound} (mean {mean_bound}); use fp32"
        )


def _scored(task: Task) -> bool:
    """Whether the task's outputs are logits and scores (a classification head)."""
    return task in (Task.RERANK, Task.CLASSIFY)


def _accuracy(got: np.ndarray, want: np.ndarray, precision: Precision, task: Task) -> tuple[bool, str]:
    """Whether `got` is close enough to transformers' fp32 `want` for `precision`, and a summary of how close."""
    if precision not in MIN_COSINE:
        error = float(np.abs(got - want).max())
        return error <= TOLERANCE, f"max abs difference {error:.1e}"
    if _scored(task):  # the scores are the second half
        labels = want.shape[-1] // 2
        error, bound = float(np.abs(got[:, labels:] - want[:, labels:]).max()), SCORE_TOLERANCE[precision]
        return error <= bound, f"scores differ from fp32's by {error:.4f} at most, bound {bound}"
    cosines, (min_bound, mean_bound) = _cosines(got, want), MIN_COSINE[precision]
    summary = f"cosine min {cosines.min():.5f}, mean {cosines.mean():.5f}"
    return bool(cosines.min() >= min_bound and cosines.mean() >= mean_bound), summary


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


def _reference(bert: torch.nn.Module, graph: Graph, batch: dict[str, np.ndarray]) -> np.ndarray:
    """What the graph must compute (as `comparable` puts it): transformers' own fp32 hidden states through the pooling
    head; its classification head's logits and their sigmoid or softmax; SPLADE over its masked-LM logits."""
    tensors = {name: torch.from_numpy(value) for name, value in batch.items()}
    task = graph_task(graph)
    if task is not Task.EMBED:
        with torch.no_grad():
            logits = bert(**tensors).logits.float()
            if task is Task.SPARSE:
                return splade(logits, tensors[contract.ATTENTION_MASK]).numpy()
            scores = torch.sigmoid(logits) if task is Task.RERANK else torch.softmax(logits, dim=-1)
            return torch.cat([logits, scores], dim=-1).numpy()
    with torch.no_grad():
        hidden = bert(**tensors, output_hidden_states=True).hidden_states
        features = torch.cat([hidden[i] for i in graph.indices], dim=-1)
        mask = graph.pooling_mask(tensors[contract.INPUT_IDS], tensors[contract.ATTENTION_MASK])
        return graph.head(features, mask).numpy()


def _run_graph(graph: torch.nn.Module, batch: dict[str, np.ndarray], task: Task, vocabulary: int,
               device: str = "cpu") -> np.ndarray:
    """A graph's (or a loaded TorchScript module's) outputs for `batch`, as `comparable` puts them."""
    got = graph(*(torch.from_numpy(batch[name]).to(device) for name in INPUT_NAMES))
    got = got if isinstance(got, tuple) else (got,)
    return comparable(task, [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in got],
                      vocabulary)


def _torchscript_outputs(path: Path, batches: list[dict[str, np.ndarray]], precision: Precision,
                         task: Task = Task.EMBED, vocabulary: int = 0) -> list[np.ndarray]:
    """Run the saved TorchScript file as the runtime will: fp16 on a GPU when there is one (CPUs are slow at it)."""
    device = "cuda" if precision is Precision.FP16 and torch.cuda.is_available() else "cpu"
    module = torch.jit.load(str(path), map_location=device)
    with torch.inference_mode():
        return [_run_graph(module, batch, task, vocabulary, device) for batch in batches]


def _onnx_outputs(path: Path, batches: list[dict[str, np.ndarray]], task: Task = Task.EMBED,
                  vocabulary: int = 0) -> list[np.ndarray]:
    """Run the ONNX file on ONNX Runtime's CPU provider, one output array per batch (as `comparable` puts it)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [comparable(task, session.run(list(task.outputs), batch), vocabulary) for batch in batches]
