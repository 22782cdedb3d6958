"""Export options, and how unset options are filled in from the model folder.

Defaults follow the model: a sentence-transformers folder (modules.json,
1_Pooling/config.json, Normalize) is reproduced exactly; any other BERT folder
gets bert-as-service's default, mean pooling over layer -2.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

from bertserve.errors import ExportError
from bertserve.model_repository.deployment import Deployment, Runtime

from .options import Pooling, hidden_state_indices

DEFAULT_MAX_BATCH_SIZE = 64
_BERT_MAX_LEN = 512
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# sentence-transformers pooling flags that map onto one bertserve strategy.
_ST_POOLING = {
    "pooling_mode_mean_tokens": Pooling.MEAN,
    "pooling_mode_max_tokens": Pooling.MAX,
    "pooling_mode_cls_token": Pooling.CLS,
    "pooling_mode_lasttoken": Pooling.SEP,
}


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
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    mask_cls_sep: bool = False  # leave [CLS] and [SEP] out of pooling
    lowercase: Optional[bool] = None  # None: the tokenizer's own casing
    precision: Precision = Precision.FP32
    deployment: Deployment = Deployment()
    overwrite: bool = False


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


@dataclass(frozen=True)
class _StPipeline:
    transformer_dir: Path
    pooling: Pooling
    normalize: bool
    max_seq_len: Optional[int]
    lowercase_input: bool


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

    name = config.name or model_dir.name
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r} is not valid for Triton; use letters, digits, '.', '_' and '-'")
    if config.max_batch_size < 1:
        raise ExportError(f"max_batch_size must be at least 1, got {config.max_batch_size}")
    max_seq_len = config.max_seq_len or (st.max_seq_len if st and st.max_seq_len else min(_BERT_MAX_LEN, position_limit))
    if not 2 <= max_seq_len <= position_limit:
        raise ExportError(
            f"max_seq_len {max_seq_len} is outside what the model supports (2..{position_limit} tokens)"
        )
    layers = tuple(config.layers) if config.layers else ((-1,) if st else (-2,))
    if len(set(layers)) != len(layers):
        raise ExportError(f"layers {layers} lists a layer twice")
    try:
        hidden_state_indices(layers, int(model_config["num_hidden_layers"]))
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    _check_precision(Precision(config.precision), config.deployment.runtime)
    pooling = Pooling(config.pooling) if config.pooling else (st.pooling if st else Pooling.MEAN)
    if config.mask_cls_sep and pooling in (Pooling.CLS, Pooling.SEP, Pooling.CLS_POOLED):
        raise ExportError(f"--mask-cls-sep leaves nothing for {pooling.value} pooling, which reads [CLS] or [SEP]")
    return ExportPlan(
        transformer_dir=transformer_dir,
        repository=Path(config.repository).expanduser(),
        name=name,
        pooling=pooling,
        layers=layers,
        normalize=config.normalize if config.normalize is not None else bool(st and st.normalize),
        max_seq_len=max_seq_len,
        max_batch_size=config.max_batch_size,
        mask_cls_sep=config.mask_cls_sep,
        lowercase=config.lowercase,
        precision=Precision(config.precision),
        deployment=config.deployment,
        lowercase_input=bool(st and st.lowercase_input),
        overwrite=config.overwrite,
    )


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
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return None
    modules = {m["type"].rsplit(".", 1)[-1]: model_dir / m["path"] for m in json.loads(modules_file.read_text())}
    unsupported = set(modules) - {"Transformer", "Pooling", "Normalize"}
    if unsupported or "Transformer" not in modules or "Pooling" not in modules:
        raise ExportError(
            f"{model_dir} is a sentence-transformers pipeline with modules {sorted(modules)}; bertserve reproduces "
            "Transformer -> Pooling [-> Normalize] only"
        )
    flags = json.loads((modules["Pooling"] / "config.json").read_text())
    chosen = [pooling for flag, pooling in _ST_POOLING.items() if flags.get(flag)]
    others = [k for k, v in flags.items() if k.startswith("pooling_mode") and v is True and k not in _ST_POOLING]
    if len(chosen) != 1 or others:
        enabled = sorted(k for k, v in flags.items() if k.startswith("pooling_mode") and v is True)
        raise ExportError(
            f"the sentence-transformers pooling {enabled} in {model_dir} has no exact bertserve equivalent; "
            "pass --pooling to choose one explicitly"
        )
    transformer_dir = modules["Transformer"]
    st_config_file = transformer_dir / "sentence_bert_config.json"
    st_config = json.loads(st_config_file.read_text()) if st_config_file.is_file() else {}
    return _StPipeline(
        transformer_dir=transformer_dir,
        pooling=chosen[0],
        normalize="Normalize" in modules,
        max_seq_len=st_config.get("max_seq_length"),
        lowercase_input=bool(st_config.get("do_lower_case", False)),
    )
