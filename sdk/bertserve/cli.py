"""The `bertserve` command: `encode`, `health` and `status` (clients of a running server); `export`, `serve` and
`frontdoor` (need the server extra). Choices and defaults come from the enums and config classes they fill."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import BertserveError
from .model_repository.deployment import Backend, Deployment, PerformanceHint, Runtime

_API_KEY_VARIABLE, _ADMIN_KEY_VARIABLE = "BERTSERVE_API_KEY", "BERTSERVE_ADMIN_KEY"
_SERVER_EXTRA = "this command needs the server extra: pip install 'bertserve[server]' (missing: {})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bertserve: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except BertserveError as exc:
        print(f"bertserve: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertserve", description="BERT embeddings served by NVIDIA Triton.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for declare in (_encode_command, _health_command, _export_command, _status_command, _serve_command,
                    _frontdoor_command):
        declare(commands)
    return parser


def _encode_command(commands: Any) -> None:
    encode = commands.add_parser("encode", help="encode sentences with a running server")
    encode.add_argument("sentences", nargs="*", help="sentences to encode (default: read a file or stdin)")
    encode.add_argument("-f", "--file", type=Path, help="read sentences from this file, one per line")
    encode.add_argument("-o", "--output", type=Path, help="write vectors to a .npy or .jsonl file (default: JSON lines on stdout)")
    _client_options(encode, timeout=60.0)
    encode.add_argument("--model", help="model name, when the server serves several")
    encode.set_defaults(run=_encode)


def _health_command(commands: Any) -> None:
    health = commands.add_parser("health", help="check that a server serves: a real inference through each model "
                                                "(exit 0), for readiness probes")
    _client_options(health, timeout=10.0)
    health.add_argument("--model", help="check this model only (default: every bertserve model served)")
    health.set_defaults(run=_health)


def _export_command(commands: Any) -> None:
    from .contract import Task
    from .export.config import DEFAULT_MAX_BATCH_SIZE, DEFAULT_SPARSE_MAX_BATCH_SIZE, Precision
    from .export.options import Pooling

    export = commands.add_parser("export", help="export a Hugging Face BERT folder to a Triton model repository")
    export.add_argument("model_dir", type=Path, nargs="?",
                        help="folder with config.json, tokenizer files and weights (default: all-MiniLM-L6-v2)")
    export.add_argument("-r", "--repository", type=Path, help="model repository (default: $BERTSERVE_HOME/repository)")
    export.add_argument("--name", help="model name in the repository (default: the folder's name)")
    export.add_argument("--task", choices=_values(Task),
                        help="what the model computes (default: what the folder holds: rerank or classify for a "
                             "BertForSequenceClassification with one or more labels, a CrossEncoder included; sparse "
                             "(SPLADE) for a BertForMaskedLM or a SparseEncoder; else embed)")
    export.add_argument("--pooling", choices=_values(Pooling),
                        help="pooling strategy (default: the sentence-transformers config, else mean)")
    export.add_argument("--layers", nargs="+", metavar="N",
                        help="layers to pool, -1 is the last; several are concatenated (default: -1 for "
                             "sentence-transformers models, else -2)")
    export.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                        help="L2-normalise the vectors (default: as the sentence-transformers config says, else no)")
    export.add_argument("--max-seq-len", type=int, help="tokens per input, longer input is truncated on the right "
                                                        "(default: the model's, at most 512)")
    export.add_argument("--max-batch-size", type=int,
                        help=f"largest batch the server accepts (default: {DEFAULT_MAX_BATCH_SIZE}; sparse models "
                             f"{DEFAULT_SPARSE_MAX_BATCH_SIZE}, whose logits take batch x tokens x vocabulary floats)")
    export.add_argument("--mask-cls-sep", action="store_true", help="leave [CLS] and [SEP] out of pooling")
    export.add_argument("--lowercase", action=argparse.BooleanOptionalAction,
                        help="override the tokenizer's casing: --lowercase as uncased BERT, --no-lowercase keeps case "
                             "(default: the model's own)")
    export.add_argument("--precision", choices=_values(Precision),
                        help="encoder precision: fp16 for GPUs; for CPUs with --runtime openvino bf16 (AMX, "
                             "AVX512-BF16), auto (bf16 where the serving CPU has bf16 units, else fp32) or int8 "
                             "(static, calibrated), int8 with onnxruntime (dynamic); pooling stays fp32 "
                             f"(default: {Precision.FP32.value}, or auto with the CPU default runtime below)")
    export.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx",
                        help="onnx, or a TensorRT engine for the tensorrt backend (needs tensorrt and a GPU)")
    _deployment_options(export)
    export.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    export.set_defaults(run=_export)


def _deployment_options(export: argparse.ArgumentParser) -> None:
    """The export options that become its `Deployment`, with that class's choices and defaults."""
    export.add_argument("--backend", choices=[b.value for b in Backend if b is not Backend.TENSORRT],
                        help="Triton backend for the encoder: python runs in `bertserve serve`; onnxruntime and "
                             "openvino (implies --runtime openvino) in the NGC Triton image "
                             f"(default: {Deployment.backend.value})")
    export.add_argument("--runtime", choices=_values(Runtime),
                        help="what runs the encoder in the python backend: onnxruntime (model.onnx), openvino "
                             "(OpenVINO IR on the CPU: bf16 and static int8), or torch (TorchScript on PyTorch, for "
                             "CUDA GPUs with --precision fp16) (default, for the python backend with neither "
                             "--runtime, --precision nor --gpus: openvino with precision auto on CPUs with bf16 units "
                             f"(AMX, AVX512-BF16), else {Deployment.runtime.value})")
    export.add_argument("--performance-hint", choices=_values(PerformanceHint),
                        help="openvino: one stream on all cores (latency), or a stream per core with each batch "
                             f"split over them (throughput) (default: {Deployment.performance_hint.value})")
    export.add_argument("--instances", type=int, default=Deployment.instances,
                        help="encoder instances per GPU, or on the CPU, sharing its cores (default: %(default)s)")
    export.add_argument("--tokenizer-instances", type=int, default=Deployment.tokenizer_instances,
                        help="tokenizer instances on the CPU; give a GPU encoder several (default: %(default)s)")
    export.add_argument("--gpus", help="comma-separated GPU ids for the encoder instances (default: any GPU, else CPU)")
    export.add_argument("--tensorrt-accelerator", action="store_true",
                        help="onnxruntime backend: run the graph with ONNX Runtime's TensorRT provider")
    export.add_argument("--max-queue-size", type=int, default=Deployment.max_queue_size,
                        help="requests waiting per model before new ones are turned away as busy; 0: no bound "
                             "(default: %(default)s)")
    export.add_argument("--queue-timeout", type=float, default=Deployment.queue_timeout,
                        help="seconds a request may wait in a queue before it is turned away; 0: no bound "
                             "(default: %(default)s)")
    export.add_argument("--max-request-bytes", type=int, default=Deployment.max_request_bytes,
                        help="bytes of text one request may carry (default: %(default)s)")


def _status_command(commands: Any) -> None:
    status = commands.add_parser("status", help="show the server's models and their request figures")
    _client_options(status, timeout=10.0)
    _key_option(status, "--admin-key", _ADMIN_KEY_VARIABLE,
                "also list models that failed to load (default: ${})")
    status.set_defaults(run=_status)


def _serve_command(commands: Any) -> None:
    from .frontdoor.config import add_arguments as front_door_options
    from .server.config import ServerConfig

    serve = commands.add_parser("serve", help="run tritonserver locally (default: the all-MiniLM-L6-v2 model)")
    serve.add_argument("-r", "--repository",
                       help="model repository to serve: a folder, or s3://, gs:// or as:// object storage that "
                            "tritonserver reads itself (default: $BERTSERVE_HOME/repository, with the default model)")
    for name in ("http", "grpc", "metrics"):
        serve.add_argument(f"--{name}-port", type=int, default=getattr(ServerConfig, f"{name}_port"))
    serve.add_argument("--host", default=ServerConfig.host, help="address to listen on (default: %(default)s)")
    _key_option(serve, "--api-key", _API_KEY_VARIABLE,
                "require 'Authorization: Bearer KEY' for inference (default: ${}, else no key)")
    serve.add_argument("--tritonserver", type=Path, metavar="BINARY",
                       help="an installed tritonserver to run, e.g. /opt/tritonserver/bin/tritonserver in the NGC image "
                            "(default: the one of the nvidia-pytriton wheel)")
    _key_option(serve, "--admin-key", _ADMIN_KEY_VARIABLE,
                "key for the admin APIs (default: ${}, else a new one at each start, written to "
                "$BERTSERVE_HOME/admin-key)")
    serve.add_argument("--cache-size", metavar="SIZE",
                       help="answer requests repeated exactly from a response cache of this size, e.g. 256MB or "
                            "1GiB (default: no cache); `bertserve status` shows its hits")
    front_door_options(serve, standalone=False)
    serve.set_defaults(run=_serve)


def _frontdoor_command(commands: Any) -> None:
    from .frontdoor.config import add_arguments as front_door_options

    door = commands.add_parser("frontdoor", help="serve the OpenAI API and bert-as-service's protocol in front of "
                                                 "a running Triton server (`serve` starts one itself)")
    _client_options(door, timeout=60.0)
    front_door_options(door, standalone=True)
    door.set_defaults(run=_frontdoor)


def _client_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--url", default="localhost:8001", help="server address (default: %(default)s)")
    parser.add_argument("--protocol", choices=["grpc", "http"], help="protocol when the url has no scheme (default: grpc)")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per request (default: %(default)s)")
    _key_option(parser, "--api-key", _API_KEY_VARIABLE, "the server's API key (default: ${})")


def _key_option(parser: argparse.ArgumentParser, flag: str, variable: str, help_text: str) -> None:
    """A key option whose default is read from the environment variable `variable` (`$` in the help names it)."""
    parser.add_argument(flag, default=os.environ.get(variable), help=help_text.replace("${}", f"${variable}"))


def _values(choices: type[Enum]) -> list[str]:
    return [choice.value for choice in choices]


def _encode(args: argparse.Namespace) -> int:
    from .client import Encoder

    sentences = _read_sentences(args)
    with Encoder(args.url, model=args.model, protocol=args.protocol, timeout=args.timeout,
                 api_key=args.api_key) as encoder:
        vectors = encoder.encode(sentences)
    if args.output is not None and args.output.suffix == ".npy":
        if isinstance(vectors, list):
            raise BertserveError("token-level vectors have different lengths per input; write them to a .jsonl file")
        np.save(args.output, vectors)
        return 0
    lines = "".join(json.dumps(np.asarray(v).tolist()) + "\n" for v in vectors)
    if args.output is not None:
        args.output.write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0


def _status(args: argparse.Namespace) -> int:
    from .client import Encoder

    with Encoder(args.url, protocol=args.protocol, timeout=args.timeout, api_key=args.api_key,
                 admin_key=args.admin_key) as encoder:
        print(encoder.server_status().table())
    return 0


def _health(args: argparse.Namespace) -> int:
    from .client import Encoder
    from .health import probe

    with Encoder(args.url, protocol=args.protocol, timeout=args.timeout, api_key=args.api_key, retries=0) as encoder:
        names = [args.model] if args.model else encoder.models()
        if not names:
            raise BertserveError(f"{encoder.address} serves no bertserve model")
    for name in names:
        started = time.monotonic()
        with Encoder(args.url, model=name, protocol=args.protocol, timeout=args.timeout, api_key=args.api_key,
                     retries=0) as encoder:
            probe(encoder)
        print(f"bertserve: {name} serves ({(time.monotonic() - started) * 1000:.0f} ms)")
    return 0


def _read_sentences(args: argparse.Namespace) -> list[str]:
    if args.sentences:
        return list(args.sentences)
    if args.file is not None:
        text = args.file.read_text(encoding="utf-8")
    else:
        if sys.stdin.isatty():
            print("bertserve: reading sentences from stdin, one per line; end with Ctrl-D", file=sys.stderr)
        text = sys.stdin.read()
    return [line for line in text.splitlines() if line.strip()]


def _export(args: argparse.Namespace) -> int:
    from . import contract

    export, server = _server_extra("bertserve.export"), _server_extra("bertserve.server")
    layers = tuple(int(v) for item in args.layers for v in item.split(",") if v) if args.layers else None
    if args.format == "tensorrt" and args.backend:
        raise BertserveError("--format tensorrt is served by the tensorrt backend; drop --backend")
    backend = export.Backend.TENSORRT if args.format == "tensorrt" else export.Backend(args.backend or "python")
    precision = args.precision or "fp32"
    if backend is export.Backend.PYTHON and not (args.runtime or args.precision or args.gpus):
        chosen, auto_precision = export.default_encoder()
        runtime, precision = chosen.value, auto_precision.value
        logging.getLogger("bertserve").info("encoder: %s, precision %s, the fastest measured on this CPU "
                                            "(--runtime and --precision choose another)", runtime, precision)
    else:
        runtime = args.runtime or ("openvino" if backend is export.Backend.OPENVINO else "onnxruntime")
    if runtime == "torch" and backend is not export.Backend.PYTHON:
        raise BertserveError("--runtime torch runs in the python backend; drop --backend and --format")
    if backend is export.Backend.OPENVINO and runtime != "openvino":
        raise BertserveError("--backend openvino runs OpenVINO IR; drop --runtime or pass --runtime openvino")
    deployment = export.Deployment(
        backend=backend,
        runtime=export.Runtime(runtime),
        **(dict(performance_hint=export.PerformanceHint(args.performance_hint)) if args.performance_hint else {}),
        instances=args.instances,
        tokenizer_instances=args.tokenizer_instances,
        gpus=tuple(int(g) for g in args.gpus.split(",")) if args.gpus else (),
        tensorrt_accelerator=args.tensorrt_accelerator,
        max_queue_size=args.max_queue_size,
        queue_timeout=args.queue_timeout,
        max_request_bytes=args.max_request_bytes,
    )
    config = export.ExportConfig(
        model_dir=args.model_dir or server.default_model_dir(),
        repository=args.repository or server.bertserve_home() / "repository",
        name=args.name or (None if args.model_dir else server.DEFAULT_MODEL_NAME),
        pooling=export.Pooling(args.pooling) if args.pooling else None,
        layers=layers,
        normalize=args.normalize,
        max_seq_len=args.max_seq_len,
        max_batch_size=args.max_batch_size,
        mask_cls_sep=args.mask_cls_sep,
        lowercase=args.lowercase,
        precision=export.Precision(precision),
        deployment=deployment,
        overwrite=args.overwrite,
        task=contract.Task(args.task) if args.task else None,
    )
    info = export.export_model(config)
    print(info.to_json(), end="")
    return 0


def _serve(args: argparse.Namespace) -> int:
    server = _server_extra("bertserve.server")
    # Every option is checked before the default model is exported on first use: a bad key costs no export.
    serves_default = not args.repository
    repository = server.bertserve_home() / "repository" if serves_default else args.repository
    if not server.is_object_storage(repository):
        repository = Path(repository)
    config = server.ServerConfig(
        repository=repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        api_key=args.api_key or None,
        admin_key=args.admin_key or None,
        tritonserver=args.tritonserver,
        cache_size=server.byte_size(args.cache_size, "--cache-size") if args.cache_size is not None else None,
    )
    door_config = None
    if args.openai_port or args.bert_as_service_port:
        frontdoor = _server_extra("bertserve.frontdoor")
        door_config = frontdoor.FrontDoorConfig.from_arguments(
            args, triton_url=f"localhost:{args.grpc_port}", api_key=args.api_key or None,
            bert_as_service_model=args.bert_as_service_model or (
                server.DEFAULT_MODEL_NAME if serves_default else _default_door_model(repository)))
    if serves_default:
        server.default_repository()
    # SIGTERM (docker stop, kill) shuts down as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with server.TritonServer(config) as triton, contextlib.ExitStack() as doors:
        door = doors.enter_context(frontdoor.FrontDoor(door_config)) if door_config else None
        key_file = server.write_admin_key(triton.admin_key)
        lines = [f"bertserve: ready, serving {repository}", f"  gRPC     {triton.grpc_url}",
                 f"  HTTP     {triton.http_url}", f"  metrics  {triton.metrics_url}"]
        if door and door.openai_url:
            lines.append(f"  OpenAI   {door.openai_url}/embeddings")
        if door_config and door_config.bert_as_service_port:
            port, port_out = door_config.bert_as_service_ports
            lines.append(f"  BertClient(port={port}, port_out={port_out})")
        lines += [f"  inference {'needs the API key' if config.api_key else 'is open (no --api-key)'}; "
                  f"admin key in {key_file}", "Press Ctrl-C to stop."]
        print("\n".join(lines), flush=True)
        try:
            while triton.is_alive() and (door is None or door.is_alive()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("bertserve: stopping", file=sys.stderr, flush=True)
            return 0
        if door is not None and not door.is_alive():
            raise BertserveError(f"the front door exited unexpectedly; its log ends with:\n{door.logs()[-2000:]}")
        tail = "\n".join(triton.logs().splitlines()[-20:])
        raise BertserveError(f"tritonserver exited unexpectedly; its log ends with:\n{tail}")


def _default_door_model(repository: Union[Path, str]) -> Optional[str]:
    """BertClient's model when none is named: the default model if the repository holds it."""
    from bertserve.server import DEFAULT_MODEL_NAME

    if isinstance(repository, str):  # object storage: `_serve` made every folder a Path
        return None
    return DEFAULT_MODEL_NAME if (repository / DEFAULT_MODEL_NAME).is_dir() else None


def _frontdoor(args: argparse.Namespace) -> int:
    frontdoor = _server_extra("bertserve.frontdoor")
    from bertserve.frontdoor.service import run

    if args.protocol == "http" or args.url.startswith("http"):
        raise BertserveError("the front door talks to Triton over gRPC; give its gRPC address (e.g. localhost:8001)")
    run(frontdoor.FrontDoorConfig.from_arguments(args, triton_url=args.url, api_key=args.api_key or None))
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _server_extra(module: str) -> Any:
    """A module of the server extra, imported only by the commands that need it (`serve` needs no torch)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BertserveError(_SERVER_EXTRA.format(exc.name)) from None


if __name__ == "__main__":
    sys.exit(main())
