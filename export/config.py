"""Export options, and how unset options are filled in from the model folder.

Defaults follow the model: a sentence-transformers folder (modules.json,
1_Pooling/config.json, Normalize) is reproduced exactly; any other BERT folder
gets bert-as-service's default, mean pooling over layer -2.

The task (contract.Task) follows the folder too: a sequence-classification head (a sentence-transformers
CrossEncoder included) is a reranker with one label and a classifier with more; a masked-LM head (a
sentence-transformers SparseEncoder included) gives SPLADE vectors; anything else embeds.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Mapping, Optional

from bertserve.contract import Task
from bertserve.errors import ExportError
from bertserve.model_repository.deployment import Backend, Deployment, Runtime

from .options import Pooling, hidden_state_indices

DEFAULT_MAX_BATCH_SIZE = 64
# Sparse models compute [batch, tokens, vocabulary] fp32 MLM logits: 8 x 512 x 30,522 x 4 bytes is 500 MB (and as
# much again for the activation) per encoder instance, where 64 would take 8 GB.
DEFAULT_SPARSE_MAX_BATCH_SIZE = 8
_BERT_MAX_LEN = 512
_log = logging.getLogger("bertserve.export")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# sentence-transformers pooling flags (before version 6) that map onto one bertserve strategy.
_ST_POOLING = {
    "pooling_mode_mean_tokens": Pooling.MEAN,
    "pooling_mode_max_tokens": Pooling.MAX,
    "pooling_mode_cls_token": Pooling.CLS,
    "pooling_mode_lasttoken": Pooling.SEP,
}
# sentence-transformers 6's `pooling_mode` names of the same strategies.
_ST_POOLING_MODES = {"mean": Pooling.MEAN, "max": Pooling.MAX, "cls": Pooling.CLS, "lasttoken": Pooling.SEP}


class Precision(str, Enum):
    """Numeric precision of the encoder graph; pooling and normalisation always run in fp32."""

    FP32 = "fp32"
    FP16 = "fp16"  # GPUs
    # CPUs, OpenVINO runtime: bf16 on the CPU's bf16 units (AMX, AVX512-BF16); auto: bf16 where the serving
    # CPU has them, fp32 elsewhere. The file holds fp32 weights either way; OpenVINO lowers them when compiling.
    BF16 = "bf16"
    AUTO = "auto"
    # CPUs: ONNX Runtime quantises weights and, on the fly, activations; OpenVINO runs a statically
    # calibrated graph (NNCF).
    INT8 = "int8"


# CPU flags of hardware bf16 (AMX, AVX512-BF16): there OpenVINO's bf16 runs at about 3x fp32.
BF16_UNITS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (Linux), empty where /proc/cpuinfo cannot tell."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), ()))


def default_encoder(flags: Optional[frozenset[str]] = None) -> tuple[Runtime, Precision]:
    """The encoder an export gets when it names neither runtime nor precision: the fastest measured on this CPU.

    OpenVINO with precision auto where the CPU has bf16 units; ONNX Runtime fp32 elsewhere, where OpenVINO
    measured slower at batch 1 and under 16 clients (perf/NOTES.md, "The CPU default").
    """
    flags = cpu_flags() if flags is None else flags
    return (Runtime.OPENVINO, Precision.AUTO) if flags & set(BF16_UNITS) else (Runtime.ONNXRUNTIME, Precision.FP32)


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how. `None` means: take it from the model folder (see module docstring)."""

    model_dir: Path
    repository: Path
    name: Optional[str] = None
    pooling: Optional[Pooling] = None
    layers: Optional[tuple[int, ...]] = None
    normalize: Optional[bool] = None
    max_seq_len: Optional[int] = None
    max_batch_size: Optional[int] = None  # None: DEFAULT_MAX_BATCH_SIZE, DEFAULT_SPARSE_MAX_BATCH_SIZE for sparse
    mask_cls_sep: bool = False  # leave [CLS] and [SEP] out of pooling
    lowercase: Optional[bool] = None  # None: the tokenizer's own casing
    precision: Precision = Precision.FP32
    deployment: Deployment = Deployment()
    overwrite: bool = False
    task: Optional[Task] = None  # None: what the folder holds (see module docstring)


@dataclass(frozen=True)
class ExportPlan:
    """An `ExportConfig` with every choice made."""

    transformer_dir: Path
    repository: Path
    name: str
    pooling: Pooling
    layers: tuple[int, ...]
    normalize: bool
    max_seq_len: int
    max_batch_size: int
    mask_cls_sep: bool
    lowercase: Optional[bool]
    precision: Precision
    deployment: Deployment
    lowercase_input: bool
    overwrite: bool
    task: Task = Task.EMBED
    labels: tuple[str, ...] = ()  # rerank and classify: the head's outputs, in id order
    # The sentence-transformers configuration's named prompts and the one applied by default ("": none).
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    # What the export says once it is sure to go ahead (after any refusal): how the task was chosen.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _StPipeline:
    transformer_dir: Path
    pooling: Optional[Pooling]  # None: the pipeline ends in a head (CrossEncoder, SparseEncoder), not pooling
    normalize: bool
    max_seq_len: Optional[int]
    lowercase_input: bool
    head: Optional[Task] = None  # SparseEncoder: sparse; a CrossEncoder's head is named by its config.json
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    # What the export says once it is sure to go ahead (after any refusal): how the task was chosen.
    notes: tuple[str, ...] = ()


def plan_export(config: ExportConfig) -> ExportPlan:
    """Validate `config` against the model folder and fill in the defaults."""
    model_dir = Path(config.model_dir).expanduser()
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face model folder (no config.json); pass the folder holding it")
    st = _read_sentence_transformers(model_dir)
    transformer_dir = st.transformer_dir if st else model_dir
    model_config = json.loads((transformer_dir / "config.json").read_text())
    if model_config.get("model_type") != "bert":
        raise ExportError(
            f"{transformer_dir} holds a {model_config.get('model_type')!r} model; bertserve exports BERT models "
            "(model_type 'bert') only"
        )
    position_limit = int(model_config.get("max_position_embeddings", _BERT_MAX_LEN))
    task = _task(transformer_dir, model_config, st, config.task)
    embedding = st if st and st.pooling else None  # a sentence-transformers pipeline that ends in pooling

    name = config.name or model_dir.name
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r} is not valid for Triton; use letters, digits, '.', '_' and '-'")
    max_batch_size = config.max_batch_size if config.max_batch_size is not None else (
        DEFAULT_SPARSE_MAX_BATCH_SIZE if task is Task.SPARSE else DEFAULT_MAX_BATCH_SIZE)
    if max_batch_size < 1:
        raise ExportError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if config.max_seq_len:
        max_seq_len = config.max_seq_len
    elif st and st.max_seq_len:
        max_seq_len = st.max_seq_len
    elif st or task is not Task.EMBED:
        # As sentence-transformers 6 (which records max_seq_length there), CrossEncoder and SparseEncoder load it:
        # the tokenizer's model_max_length, within the positions.
        max_seq_len = min(_tokenizer_max_length(transformer_dir) or position_limit, position_limit)
    else:
        max_seq_len = min(_BERT_MAX_LEN, position_limit)
    if not 2 <= max_seq_len <= position_limit:
        raise ExportError(
            f"max_seq_len {max_seq_len} is outside what the model supports (2..{position_limit} tokens)"
        )
    if task is not Task.EMBED:
        _refuse_pooling_options(config, task)
    layers = tuple(config.layers) if config.layers else ((-1,) if st or task is not Task.EMBED else (-2,))
    if len(set(layers)) != len(layers):
        raise ExportError(f"layers {layers} lists a layer twice")
    try:
        hidden_state_indices(layers, int(model_config["num_hidden_layers"]))
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    _check_precision(Precision(config.precision), config.deployment.runtime)
    if task is Task.SPARSE and config.deployment.backend is Backend.TENSORRT:
        raise ExportError("a sparse model's top-k has a size known only at run time, which TensorRT engines do not "
                          "take; export it without --format tensorrt (on GPUs: --runtime torch --precision fp16)")
    pooling = Pooling(config.pooling) if config.pooling else (
        _TASK_POOLING.get(task) or (embedding.pooling if embedding else Pooling.MEAN))
    if config.mask_cls_sep and pooling in (Pooling.CLS, Pooling.SEP, Pooling.CLS_POOLED):
        raise ExportError(f"--mask-cls-sep leaves nothing for {pooling.value} pooling, which reads [CLS] or [SEP]")
    return ExportPlan(
        transformer_dir=transformer_dir,
        repository=Path(config.repository).expanduser(),
        name=name,
        pooling=pooling,
        layers=layers,
        normalize=config.normalize if config.normalize is not None else bool(embedding and embedding.normalize),
        max_seq_len=max_seq_len,
        max_batch_size=max_batch_size,
        mask_cls_sep=config.mask_cls_sep,
        lowercase=config.lowercase,
        precision=Precision(config.precision),
        deployment=config.deployment,
        lowercase_input=bool(st and st.lowercase_input),
        overwrite=config.overwrite,
        task=task,
        notes=_task_notes(transformer_dir, model_config, task, config.task),
        labels=_labels(model_config, task),
        prompts=dict(st.prompts) if st else {},
        default_prompt_name=st.default_prompt_name if st else "",
    )


# What a task's head reads, recorded in ModelInfo: BertForSequenceClassification's pooler over [CLS] of the last
# layer; SPLADE's max over tokens.
_TASK_POOLING = {Task.RERANK: Pooling.CLS_POOLED, Task.CLASSIFY: Pooling.CLS_POOLED, Task.SPARSE: Pooling.MAX}
# The transformers architectures whose weights hold each task's head.
_HEADS = {Task.RERANK: ("BertForSequenceClassification",), Task.CLASSIFY: ("BertForSequenceClassification",),
          Task.SPARSE: ("BertForMaskedLM", "BertForPreTraining")}
_CLASSIFIER, _MASKED_LM = "BertForSequenceClassification", "BertForMaskedLM"


def detect_task(model_config: dict, st: Optional["_StPipeline"] = None) -> Task:
    """The task a folder's head serves: a classification head in its config.json `architectures`, or a
    sentence-transformers SparseEncoder. A bare masked-LM head is embed: Google's BERT releases, bert-as-service's
    models, carry one too, and a folder cannot tell a SPLADE model from them (--task sparse says so)."""
    architectures = model_config.get("architectures") or ()
    if _CLASSIFIER in architectures:
        return Task.RERANK if num_labels(model_config) == 1 else Task.CLASSIFY
    if st and st.head is Task.SPARSE:
        return Task.SPARSE
    return Task.EMBED


def num_labels(model_config: dict) -> int:
    """How many outputs a classification head has, as transformers counts them (2 where config.json is silent)."""
    return len(model_config.get("id2label") or {}) or int(model_config.get("num_labels", 2))


def _task_notes(transformer_dir: Path, model_config: dict, task: Task, forced: Optional[Task]) -> tuple[str, ...]:
    if forced is not None:
        return ()
    notes = [f"task {task.value}, as {transformer_dir} holds (--task chooses another)"]
    if task is Task.EMBED and _MASKED_LM in (model_config.get("architectures") or ()):
        notes.append(f"{transformer_dir} also has a masked-LM head: a SPLADE model is exported with --task sparse")
    return tuple(notes)


def _task(transformer_dir: Path, model_config: dict, st: Optional["_StPipeline"], forced: Optional[Task]) -> Task:
    detected = detect_task(model_config, st)
    if forced is None:
        return detected
    task = Task(forced)
    architectures = list(model_config.get("architectures") or ())
    # Without `architectures` the weights themselves decide, when the exporter loads them.
    if task is not Task.EMBED and architectures and not set(_HEADS[task]) & set(architectures):
        raise ExportError(
            f"--task {task.value} needs the weights of a {' or '.join(_HEADS[task])} head, and {transformer_dir} "
            f"holds {', '.join(architectures)}, which has none; export it as --task {detected.value}"
        )
    labels = num_labels(model_config)
    if _CLASSIFIER in architectures and task is Task.RERANK and labels != 1:
        raise ExportError(f"--task rerank needs a head with one label, and {transformer_dir}'s has {labels}; "
                          "export it as --task classify")
    if _CLASSIFIER in architectures and task is Task.CLASSIFY and labels < 2:
        raise ExportError(f"--task classify needs a head with at least two labels, and {transformer_dir}'s has one "
                          "(a softmax over it is always 1); export it as --task rerank")
    return task


def _labels(model_config: dict, task: Task) -> tuple[str, ...]:
    """rerank and classify: the head's labels in id order; transformers' placeholder LABEL_0 of a reranker is
    'score'."""
    if task not in (Task.RERANK, Task.CLASSIFY):
        return ()
    id2label = {int(k): str(v) for k, v in (model_config.get("id2label") or {}).items()}
    labels = tuple(id2label.get(i, f"LABEL_{i}") for i in range(num_labels(model_config)))
    return ("score",) if task is Task.RERANK and labels == ("LABEL_0",) else labels


def _refuse_pooling_options(config: ExportConfig, task: Task) -> None:
    given = [flag for flag, value in (("--pooling", config.pooling), ("--layers", config.layers),
                                      ("--normalize", config.normalize), ("--mask-cls-sep", config.mask_cls_sep))
             if value]
    if given:
        raise ExportError(f"{', '.join(given)} shape sentence vectors; a {task.value} model's output is its head's: "
                          "drop them (or export with --task embed)")


def _tokenizer_max_length(transformer_dir: Path) -> Optional[int]:
    """The tokenizer's model_max_length, where tokenizer_config.json sets a real one."""
    path = transformer_dir / "tokenizer_config.json"
    length = json.loads(path.read_text()).get("model_max_length") if path.is_file() else None
    return int(length) if isinstance(length, (int, float)) and 0 < length < 1_000_000 else None


def _check_precision(precision: Precision, runtime: Runtime) -> None:
    if runtime is Runtime.TORCH and precision not in (Precision.FP32, Precision.FP16):
        raise ExportError(f"--runtime torch runs fp16 (GPUs) or fp32, not {precision.value}; "
                          "for CPUs use --runtime openvino")
    if runtime is not Runtime.OPENVINO and precision in (Precision.BF16, Precision.AUTO):
        raise ExportError(f"--precision {precision.value} runs on OpenVINO's CPU plugin; add --runtime openvino")
    if runtime is Runtime.OPENVINO and precision is Precision.FP16:
        raise ExportError("fp16 is for GPUs; on CPUs OpenVINO runs fp32, bf16, auto (bf16 where the CPU has "
                          "bf16 units) or int8")


def _read_sentence_transformers(model_dir: Path) -> Optional[_StPipeline]:
    """The sentence-transformers pipeline of `model_dir` (None for a plain folder), its prompts included."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return None
    pipeline = _read_modules(model_dir, modules_file)
    prompts, default_prompt_name = _read_prompts(model_dir)
    return replace(pipeline, prompts=prompts, default_prompt_name=default_prompt_name)


def _read_prompts(model_dir: Path) -> tuple[dict[str, str], str]:
    """config_sentence_transformers.json's `prompts` and `default_prompt_name` ("" where it names none)."""
    path = model_dir / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    prompts, default = config.get("prompts") or {}, config.get("default_prompt_name") or ""
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ExportError(f"{path}'s prompts are not a map of names to texts: {prompts!r}; fix the file")
    if default and default not in prompts:
        known = ", ".join(map(repr, sorted(prompts))) or "none"
        raise ExportError(f"{path} names the default prompt {default!r}, which is not one of its prompts ({known}); "
                          "add it to `prompts` or set `default_prompt_name` to one of them")
    return prompts, str(default)


def _read_modules(model_dir: Path, modules_file: Path) -> _StPipeline:
    modules = {m["type"].rsplit(".", 1)[-1]: model_dir / m["path"] for m in json.loads(modules_file.read_text())}
    if "MLMTransformer" in modules or "SpladePooling" in modules:
        return _read_sparse_encoder(model_dir, modules)
    if set(modules) == {"Transformer"} and _is_cross_encoder(model_dir, modules["Transformer"]):
        return _head_pipeline(modules["Transformer"], None)
    unsupported = set(modules) - {"Transformer", "Pooling", "Normalize"}
    if unsupported or "Transformer" not in modules or "Pooling" not in modules:
        raise ExportError(
            f"{model_dir} is a sentence-transformers pipeline with modules {sorted(modules)}; bertserve reproduces "
            "Transformer -> Pooling [-> Normalize], a CrossEncoder and a SparseEncoder (MLMTransformer -> "
            "SpladePooling) only"
        )
    flags = json.loads((modules["Pooling"] / "config.json").read_text())
    if "pooling_mode" in flags:  # sentence-transformers 6: a mode's name, or a list of them
        modes = flags["pooling_mode"]
        enabled = [modes] if isinstance(modes, str) else list(modes)
        chosen = [_ST_POOLING_MODES[mode] for mode in enabled if mode in _ST_POOLING_MODES]
    else:
        enabled = sorted(k for k, v in flags.items() if k.startswith("pooling_mode") and v is True)
        chosen = [pooling for flag, pooling in _ST_POOLING.items() if flags.get(flag)]
    if len(chosen) != 1 or len(enabled) != 1:
        raise ExportError(
            f"the sentence-transformers pooling {enabled} in {model_dir} has no exact bertserve equivalent; "
            "pass --pooling to choose one explicitly"
        )
    if flags.get("include_prompt", True) is False:
        raise ExportError(
            f"{model_dir}'s pooling leaves the prompt's tokens out (include_prompt false), which bertserve cannot "
            "serve: its encoder pools every token of the prompted text, not told where each row's prompt ends. "
            "Serve the model with sentence-transformers, or set include_prompt true in its Pooling config.json if "
            "vectors that count the prompt will do"
        )
    transformer_dir = modules["Transformer"]
    st_config = _st_config(transformer_dir)
    return _StPipeline(
        transformer_dir=transformer_dir,
        pooling=chosen[0],
        normalize="Normalize" in modules,
        max_seq_len=st_config.get("max_seq_length"),
        lowercase_input=bool(st_config.get("do_lower_case", False)),
    )


def _st_config(transformer_dir: Path) -> dict:
    path = transformer_dir / "sentence_bert_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _head_pipeline(transformer_dir: Path, head: Optional[Task]) -> _StPipeline:
    """A CrossEncoder's or SparseEncoder's transformer: no pooling of ours; its head is in the weights."""
    st_config = _st_config(transformer_dir)
    return _StPipeline(transformer_dir=transformer_dir, pooling=None, normalize=False,
                       max_seq_len=st_config.get("max_seq_length"),
                       lowercase_input=bool(st_config.get("do_lower_case", False)), head=head)


def _is_cross_encoder(model_dir: Path, transformer_dir: Path) -> bool:
    """A sentence-transformers CrossEncoder (6+ writes modules.json with one Transformer): a classification head."""
    path = model_dir / "config_sentence_transformers.json"
    model_type = json.loads(path.read_text()).get("model_type") if path.is_file() else None
    if model_type == "CrossEncoder":
        return True
    return _st_config(transformer_dir).get("transformer_task") == "sequence-classification"


def _read_sparse_encoder(model_dir: Path, modules: dict[str, Path]) -> _StPipeline:
    # Older SparseEncoders name the transformer MLMTransformer; newer ones a Transformer of task fill-mask.
    transformer = next((kind for kind in ("MLMTransformer", "Transformer") if kind in modules), "MLMTransformer")
    if set(modules) != {transformer, "SpladePooling"}:
        raise ExportError(f"{model_dir} is a sentence-transformers SparseEncoder with modules {sorted(modules)}; "
                          "bertserve reproduces MLMTransformer -> SpladePooling only")
    pooling = json.loads((modules["SpladePooling"] / "config.json").read_text())
    strategy, activation = pooling.get("pooling_strategy", "max"), pooling.get("activation_function", "relu")
    if (strategy, activation) != ("max", "relu"):
        raise ExportError(f"{model_dir}'s SpladePooling is {strategy} over {activation}; bertserve reproduces SPLADE "
                          "v2's max over log(1 + relu(logits)) only")
    return _head_pipeline(modules[transformer], Task.SPARSE)
