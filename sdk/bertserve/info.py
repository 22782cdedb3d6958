"""What a served bertserve model is: the metadata an export records and the SDK reads back.

The export writes these fields into the ensemble's `config.pbtxt` as
`parameters` (and as `bertserve.json` beside it), so any Triton client can see
what the vectors mean without access to the original model folder. The model
config is readable without a key, so it names the source folder by its base name
only; the full path stays in `bertserve.json`, on the server's disk.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Mapping

from . import contract
from .errors import ModelNotFoundError

_PREFIX = "bertserve."
# 2: token_count may be contract.NOT_COUNTED; queue bounds; 4xx errors. 3: the model config names the source folder
# by its base name only (a change of version re-exports the default model, whose older config shows the path).
# 4: two instances of each model; the tokenizer builds token strings only when a request asks for them.
# 5: a task (embed, rerank, classify, sparse) and, for classify, the labels; prompts; per-request truncation side;
# int8 / uint8 calibration ranges; the ensemble's response cache.
FORMAT_VERSION = 5


@dataclass(frozen=True)
class ModelInfo:
    """Description of one exported model: what it computes (`task`) and how.

    `dim` is the width of the task's output: the vector for embed, the number of labels for rerank (1) and
    classify, the vocabulary for sparse. `labels` name classify's outputs, in order (`id2label`). `prompts` are the
    model's named prompts (name -> text put before the input), `default_prompt_name` the one applied when a request
    names none ("" for none).
    """

    name: str
    source: str  # the exported folder: its path where exported, its base name where read from the server
    dim: int
    pooling: str
    layers: tuple[int, ...]
    normalize: bool
    max_seq_len: int
    max_batch_size: int
    mask_cls_sep: bool = False
    precision: str = "fp32"
    backend: str = "python"
    runtime: str = "onnxruntime"  # Python backend: onnxruntime or torch; empty for a native backend
    task: str = contract.Task.EMBED.value
    labels: tuple[str, ...] = ()
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    # Pooled embed models: each dimension's minimum and maximum over the varied corpus, calibrated at export, for
    # int8 and uint8 output (bertserve.quantize). () where not calibrated.
    quantization_ranges: tuple[tuple[float, ...], ...] = ()
    format_version: int = FORMAT_VERSION

    @property
    def token_level(self) -> bool:
        """True when the model returns one vector per token (pooling `none`)."""
        return self.pooling == "none"

    def to_parameters(self) -> dict[str, str]:
        """Flat string map for Triton model-config `parameters`."""
        out = {}
        for key, value in asdict(self).items():
            if key in ("labels", contract.PROMPTS, "quantization_ranges"):  # any text, commas included; nested lists
                value = json.dumps(value if isinstance(value, Mapping) else list(value))
            elif isinstance(value, (tuple, list)):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif key == "source":
                value = folder_name(value)
            out[_PREFIX + key] = str(value)
        return out

    @classmethod
    def from_parameters(cls, model: str, params: Mapping[str, Any]) -> ModelInfo:
        """Parse the `parameters` of a Triton model config (JSON form, gRPC or HTTP)."""
        raw = {}
        for key, value in params.items():
            if key.startswith(_PREFIX):
                raw[key[len(_PREFIX):]] = value.get("string_value", "") if isinstance(value, Mapping) else value
        missing = [f.name for f in fields(cls) if f.name not in raw and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ModelNotFoundError(
                f"model {model!r} is not a bertserve embedding model (its config lacks {missing[0]!r}); "
                "pass the name of a model exported with `bertserve export`"
            )
        return cls(
            name=raw["name"],
            source=folder_name(raw["source"]),  # an export before version 3 wrote the whole path
            dim=int(raw["dim"]),
            pooling=raw["pooling"],
            layers=tuple(int(v) for v in raw["layers"].split(",")),
            normalize=raw["normalize"] == "true",
            max_seq_len=int(raw[contract.MAX_SEQ_LEN]),
            max_batch_size=int(raw["max_batch_size"]),
            mask_cls_sep=raw.get("mask_cls_sep", "false") == "true",
            precision=raw.get("precision", "fp32"),
            backend=raw.get("backend", "python"),
            runtime=raw.get(contract.ENCODER_RUNTIME, "onnxruntime"),
            task=raw.get("task", contract.Task.EMBED.value),
            labels=tuple(json.loads(raw.get("labels", "[]"))),
            prompts=json.loads(raw.get(contract.PROMPTS, "{}")),
            default_prompt_name=raw.get(contract.DEFAULT_PROMPT_NAME, ""),
            quantization_ranges=tuple(tuple(row) for row in json.loads(raw.get("quantization_ranges", "[]"))),
            format_version=int(raw.get("format_version", FORMAT_VERSION)),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def is_bertserve_config(cls, params: Mapping[str, Any]) -> bool:
        return _PREFIX + "dim" in params


def folder_name(path: str) -> str:
    """The last part of a folder path, POSIX or Windows: what a client may learn of where a model came from."""
    return PureWindowsPath(PurePosixPath(path.rstrip("/\\")).name).name
