"""Lay out one exported model in a Triton model repository: tokenizer -> encoder, chained by an ensemble.

    <repository>/<name>/            ensemble: strings in, vectors out; records the ModelInfo
    <repository>/<name>_tokenizer/  Python backend, the model's tokenizer.json
    <repository>/<name>_encoder/    the encoder: Python backend running ONNX Runtime on model.onnx, OpenVINO on
                                    model.xml or PyTorch on model.pt (embedded server), or Triton's native
                                    onnxruntime / tensorrt / openvino backend
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from bertserve import contract
from bertserve.errors import ExportError
from bertserve.info import ModelInfo

from .config import DynamicBatching, EnsembleStep, InstanceGroup, ModelConfig, TensorSpec
from .deployment import Backend, Deployment, Runtime

_BACKENDS = Path(__file__).parent / "backends"
TOKEN_TENSORS = contract.TOKEN_TENSORS
# What clients may send: the text, and optionally a second segment, a pre-tokenized flag, a flag asking for the
# tokens (show_tokens), the side to truncate, a prompt and a window of a long text per item. The ensemble passes each of them on to the
# tokenizer.
# A sparse encoder on the Python backend reads return_tokens too: it then names its entries' tokens.
_RETURN_TOKENS = TensorSpec(contract.RETURN_TOKENS, "TYPE_BOOL", (1,), optional=True)
TEXT_INPUTS = (
    TensorSpec(contract.TEXT, "TYPE_STRING", (1,)),
    TensorSpec(contract.TEXT_PAIR, "TYPE_STRING", (1,), optional=True),
    TensorSpec(contract.IS_TOKENIZED, "TYPE_BOOL", (1,), optional=True),
    _RETURN_TOKENS,
    TensorSpec(contract.TRUNCATION_DIRECTION, "TYPE_STRING", (1,), optional=True),
    TensorSpec(contract.PROMPT, "TYPE_STRING", (1,), optional=True),
    TensorSpec(contract.PROMPT_NAME, "TYPE_STRING", (1,), optional=True),
    TensorSpec(contract.WINDOW, "TYPE_INT64", (1,), optional=True),
)
# What the tokenizer tells clients besides ids: the tokens the encoder sees, and the count before truncation.
TOKEN_INFO = (TensorSpec(contract.TOKENS, "TYPE_STRING", (-1,)), TensorSpec(contract.TOKEN_COUNT, "TYPE_INT64", (1,)))


@dataclass(frozen=True)
class SpecialTokens:
    """The vocabulary's special tokens, used for pre-tokenized input."""

    cls: str = "[CLS]"
    sep: str = "[SEP]"
    unk: str = "[UNK]"


# How long a native encoder's batcher holds a request for others of its shape: short next to a forward pass,
# long enough to merge concurrent requests. The Python-backend encoder waits for none (0): it merges any shapes,
# and requests that arrive while its instances are busy merge anyway; the delay only added its 2 ms to a lone
# request (measured on a 2-core AMD EPYC, avx2 fma: p50 9.2-10.0 ms without it, 11.3-11.8 ms with it; 16 clients
# no slower).
NATIVE_ENCODER_QUEUE_DELAY_US = 2000


def component_names(name: str) -> tuple[str, str]:
    """Names of the tokenizer and encoder models behind the ensemble `name`."""
    return f"{name}_tokenizer", f"{name}_encoder"


def model_configs(
    info: ModelInfo, deployment: Deployment = Deployment(), special_tokens: SpecialTokens = SpecialTokens()
) -> tuple[ModelConfig, ModelConfig, ModelConfig]:
    """The tokenizer, encoder and ensemble configurations for `info`, served as `deployment` says."""
    tokenizer_name, encoder_name = component_names(info.name)
    buckets = contract.length_buckets(info.max_seq_len) if deployment.backend.native else ()
    queue_bounds = {"max_queue_size": deployment.max_queue_size,
                    "queue_timeout_microseconds": int(deployment.queue_timeout * 1_000_000)}
    tokens = tuple(TensorSpec(n, "TYPE_INT64", (-1,)) for n in TOKEN_TENSORS)
    results = task_outputs(info)
    tokenizer = ModelConfig(
        name=tokenizer_name,
        backend="python",
        max_batch_size=info.max_batch_size,
        inputs=TEXT_INPUTS,
        outputs=tokens + TOKEN_INFO,
        instance_group=InstanceGroup(deployment.tokenizer_instances, "KIND_CPU"),
        dynamic_batching=DynamicBatching(**queue_bounds),
        parameters={
            contract.MAX_SEQ_LEN: str(info.max_seq_len),
            contract.LENGTH_BUCKETS: ",".join(map(str, buckets)),
            contract.MAX_REQUEST_BYTES: str(deployment.max_request_bytes),
            contract.CLS_TOKEN: special_tokens.cls,
            contract.SEP_TOKEN: special_tokens.sep,
            contract.UNK_TOKEN: special_tokens.unk,
            contract.PROMPTS: json.dumps(dict(info.prompts)),
            contract.DEFAULT_PROMPT_NAME: info.default_prompt_name,
        },
    )
    python, tensorrt = deployment.backend is Backend.PYTHON, deployment.backend is Backend.TENSORRT
    encoder = ModelConfig(
        name=encoder_name,
        backend=deployment.backend.value if deployment.backend in (Backend.PYTHON, Backend.OPENVINO) else None,
        platform=deployment.backend.platform,
        max_batch_size=info.max_batch_size,
        # Ragged (Python backend only): it pads requests of different lengths together,
        # so the dynamic batcher may merge them instead of only merging equal shapes.
        inputs=tuple(TensorSpec(t.name, t.data_type, t.dims, allow_ragged_batch=python) for t in tokens)
        + ((_RETURN_TOKENS,) if _has_terms(info) else ()),
        outputs=results,
        instance_group=InstanceGroup(deployment.instances, deployment.instance_kind, deployment.gpus,
                                     tensorrt_profiles(info.max_seq_len) if tensorrt else ()),
        dynamic_batching=DynamicBatching(
            0 if python else NATIVE_ENCODER_QUEUE_DELAY_US,
            # A TensorRT engine is tuned for its profiles' batch sizes; elsewhere preferred sizes only add delay.
            tensorrt_batch_sizes(info.max_batch_size) if tensorrt else (),
            **queue_bounds,
        ),
        tensorrt_accelerator=("FP16" if info.precision == "fp16" else "FP32") if deployment.tensorrt_accelerator else None,
        parameters=_encoder_parameters(info, deployment),
    )
    ensemble_outputs = (*results, *TOKEN_INFO) + ((tokens[1],) if info.token_level else ())
    ensemble = ModelConfig(
        name=info.name,
        platform="ensemble",
        max_batch_size=info.max_batch_size,
        inputs=TEXT_INPUTS,
        outputs=ensemble_outputs,
        ensemble_steps=(
            EnsembleStep(
                tokenizer_name,
                {t.name: t.name for t in TEXT_INPUTS},
                {n: n for n in TOKEN_TENSORS + tuple(t.name for t in TOKEN_INFO)},
            ),
            EnsembleStep(encoder_name, {n: n for n in TOKEN_TENSORS + ((contract.RETURN_TOKENS,) if _has_terms(info) else ())},
                         {t.name: t.name for t in results}),
        ),
        parameters=info.to_parameters(),
        # Cached whole: a hit skips both steps. The steps themselves are not cached: a request repeated exactly
        # hits at the ensemble, so their entries would only double the memory held for it.
        response_cache=True,
    )
    return tokenizer, encoder, ensemble


def task_outputs(info: ModelInfo) -> tuple[TensorSpec, ...]:
    """The encoder's outputs for the model's task (contract.Task), which the ensemble passes on to clients."""
    task = contract.Task(info.task)
    if task is contract.Task.EMBED:
        return (TensorSpec(contract.EMBEDDING, "TYPE_FP32", (-1, info.dim) if info.token_level else (info.dim,)),)
    if task is contract.Task.SPARSE:
        terms = (TensorSpec(contract.SPARSE_TERMS, "TYPE_STRING", (-1,)),) if _has_terms(info) else ()
        return (TensorSpec(contract.SPARSE_INDICES, "TYPE_INT64", (-1,)),
                TensorSpec(contract.SPARSE_VALUES, "TYPE_FP32", (-1,))) + terms
    return tuple(TensorSpec(name, "TYPE_FP32", (info.dim,)) for name in task.outputs)


def _has_terms(info: ModelInfo) -> bool:
    """Whether the encoder names its sparse entries' tokens (contract.SPARSE_TERMS): a sparse model on the Python
    backend, which reads the vocabulary and builds them for requests that set return_tokens."""
    return info.task == contract.Task.SPARSE.value and info.backend == Backend.PYTHON.value


def _encoder_parameters(info: ModelInfo, deployment: Deployment) -> dict[str, str]:
    if deployment.backend is Backend.OPENVINO:
        # The native backend's own keys. It cannot pin f32: on CPUs with bf16 units OpenVINO then runs bf16,
        # which is what `auto` asks for; export fp32 for the python backend where exact fp32 matters.
        return {"PERFORMANCE_HINT": deployment.performance_hint.name, "NUM_STREAMS": "AUTO",
                **({"HINT_BF16": "YES"} if info.precision == "bf16" else {})}
    if deployment.backend is not Backend.PYTHON:
        return {}
    parameters = {contract.MAX_PADDING_RATIO: str(deployment.max_padding_ratio),
                  contract.ENCODER_RUNTIME: deployment.runtime.value}
    if deployment.runtime is Runtime.OPENVINO:
        parameters[contract.INFERENCE_PRECISION] = openvino_precision(info.precision)
        parameters[contract.PERFORMANCE_HINT] = deployment.performance_hint.value
    return parameters


def openvino_precision(precision: str) -> str:
    """The inference precision OpenVINO runs an export of `precision` in (int8's unquantised ops stay f32)."""
    return {"bf16": "bf16", "auto": "auto"}.get(precision, "f32")


def tensorrt_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """The batch sizes each TensorRT profile is optimised for (its `opt` and `max`), preferred by the batcher."""
    return tuple(sorted({max(1, max_batch_size // 2), max_batch_size}))


def tensorrt_profiles(max_seq_len: int) -> tuple[str, ...]:
    """The engine's optimisation profiles, one per length bucket: all offered to each instance, so that
    Triton picks the one that fits a batch's shape (it would use only the first otherwise)."""
    return tuple(str(i) for i in range(len(contract.length_buckets(max_seq_len))))


def _next_version(ensemble: Path) -> int:
    """The version a (re-)exported ensemble gets: one past the one it replaces. Triton's response cache keys
    answers by model name, version and inputs, so a replaced model's new version never gets the old answers."""
    numbers = [int(p.name) for p in ensemble.iterdir() if p.name.isdigit()] if ensemble.is_dir() else []
    return max(numbers, default=0) + 1


def existing_models(repository: Path, name: str, overwrite: bool) -> list[Path]:
    """The folders of model `name` already in `repository`; an `ExportError` if there are any and not `overwrite`."""
    existing = [repository / folder for folder in (name, *component_names(name)) if (repository / folder).exists()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it or --name to add another model")
    return existing


def write_model(
    repository: Path,
    info: ModelInfo,
    deployment: Deployment,
    encoder_dir: Path,
    tokenizer: Tokenizer,
    special_tokens: SpecialTokens,
    overwrite: bool,
) -> None:
    """Write the three models for `info` into `repository`, replacing them only if `overwrite`; the encoder's
    files (`deployment.encoder_files`) come from `encoder_dir`.

    Everything is staged beside the repository and moved in at the end, so a
    failed export never leaves a half-written model for Triton to load.
    """
    tokenizer_cfg, encoder_cfg, ensemble_cfg = model_configs(info, deployment, special_tokens)
    encoder_files = {name: encoder_dir / name for name in deployment.encoder_files}
    if deployment.backend is Backend.PYTHON:
        encoder_files["model.py"] = _BACKENDS / "encoder" / "model.py"
    existing = existing_models(repository, info.name, overwrite)
    versions = {cfg.name: "1" for cfg in (tokenizer_cfg, encoder_cfg)}
    versions[ensemble_cfg.name] = str(_next_version(repository / ensemble_cfg.name))
    targets = [repository / cfg.name for cfg in (ensemble_cfg, tokenizer_cfg, encoder_cfg)]
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=repository.parent))
    try:
        for cfg, files in [
            (ensemble_cfg, {}),
            (tokenizer_cfg, {"model.py": _BACKENDS / "tokenizer" / "model.py"}),
            (encoder_cfg, encoder_files),
        ]:
            version = staging / cfg.name / versions[cfg.name]
            version.mkdir(parents=True)
            (staging / cfg.name / "config.pbtxt").write_text(cfg.render())
            for target, source in files.items():
                shutil.copyfile(source, version / target)
        tokenizer.save(str(staging / tokenizer_cfg.name / "1" / "tokenizer.json"))
        if _has_terms(info):
            tokenizer.save(str(staging / encoder_cfg.name / "1" / "tokenizer.json"))
        (staging / ensemble_cfg.name / "bertserve.json").write_text(info.to_json())
        for target in existing:
            shutil.rmtree(target)
        for target in targets:
            (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
