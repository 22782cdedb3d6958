"""Lay out one exported model in a Triton model repository: tokenizer -> encoder, chained by an ensemble.

    <repository>/<name>/            ensemble: strings in, vectors out; records the ModelInfo
    <repository>/<name>_tokenizer/  Python backend, the model's tokenizer.json
    <repository>/<name>_encoder/    Python backend running ONNX Runtime on model.onnx
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from bertserve.errors import ExportError
from bertserve.info import ModelInfo

from .config import DynamicBatching, EnsembleStep, InstanceGroup, ModelConfig, TensorSpec

_BACKENDS = Path(__file__).parent / "backends"
TOKEN_TENSORS = ("input_ids", "attention_mask", "token_type_ids")
# Short enough to be invisible next to a forward pass, long enough to merge concurrent requests.
ENCODER_QUEUE_DELAY_US = 2000


def component_names(name: str) -> tuple[str, str]:
    """Names of the tokenizer and encoder models behind the ensemble `name`."""
    return f"{name}_tokenizer", f"{name}_encoder"


def model_configs(info: ModelInfo) -> tuple[ModelConfig, ModelConfig, ModelConfig]:
    """The tokenizer, encoder and ensemble configurations for `info`."""
    tokenizer_name, encoder_name = component_names(info.name)
    text = TensorSpec("text", "TYPE_STRING", (1,))
    tokens = tuple(TensorSpec(n, "TYPE_INT64", (-1,)) for n in TOKEN_TENSORS)
    embedding = TensorSpec("embedding", "TYPE_FP32", (-1, info.dim) if info.token_level else (info.dim,))
    tokenizer = ModelConfig(
        name=tokenizer_name,
        backend="python",
        max_batch_size=info.max_batch_size,
        inputs=(text,),
        outputs=tokens,
        instance_group=InstanceGroup(1, "KIND_CPU"),
        dynamic_batching=DynamicBatching(),
    )
    encoder = ModelConfig(
        name=encoder_name,
        backend="python",
        max_batch_size=info.max_batch_size,
        # Ragged: the backend pads requests of different lengths together, so the
        # dynamic batcher may merge them instead of only merging equal shapes.
        inputs=tuple(TensorSpec(t.name, t.data_type, t.dims, allow_ragged_batch=True) for t in tokens),
        outputs=(embedding,),
        instance_group=InstanceGroup(1, "KIND_AUTO"),
        dynamic_batching=DynamicBatching(ENCODER_QUEUE_DELAY_US),
    )
    ensemble_outputs = (embedding, tokens[1]) if info.token_level else (embedding,)
    ensemble = ModelConfig(
        name=info.name,
        max_batch_size=info.max_batch_size,
        inputs=(text,),
        outputs=ensemble_outputs,
        ensemble_steps=(
            EnsembleStep(tokenizer_name, {"text": "text"}, {n: n for n in TOKEN_TENSORS}),
            EnsembleStep(encoder_name, {n: n for n in TOKEN_TENSORS}, {"embedding": "embedding"}),
        ),
        parameters=info.to_parameters(),
    )
    return tokenizer, encoder, ensemble


def write_model(repository: Path, info: ModelInfo, onnx_file: Path, tokenizer: Tokenizer, overwrite: bool) -> None:
    """Write the three models for `info` into `repository`, replacing them only if `overwrite`.

    Everything is staged beside the repository and moved in at the end, so a
    failed export never leaves a half-written model for Triton to load.
    """
    tokenizer_cfg, encoder_cfg, ensemble_cfg = model_configs(info)
    targets = [repository / cfg.name for cfg in (ensemble_cfg, tokenizer_cfg, encoder_cfg)]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it or --name to add another model")
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=repository.parent))
    try:
        for cfg, files in [
            (ensemble_cfg, {}),
            (tokenizer_cfg, {"model.py": _BACKENDS / "tokenizer" / "model.py"}),
            (encoder_cfg, {"model.py": _BACKENDS / "encoder" / "model.py", "model.onnx": onnx_file}),
        ]:
            version = staging / cfg.name / "1"
            version.mkdir(parents=True)
            (staging / cfg.name / "config.pbtxt").write_text(cfg.render())
            for target, source in files.items():
                shutil.copyfile(source, version / target)
        tokenizer.save(str(staging / tokenizer_cfg.name / "1" / "tokenizer.json"))
        (staging / ensemble_cfg.name / "bertserve.json").write_text(info.to_json())
        for target in existing:
            shutil.rmtree(target)
        for target in targets:
            (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
