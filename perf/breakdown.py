"""Where a served request's time goes: one exported model re-served under several deployments (tokenizer
instances, OpenVINO hint, encoder batching delay), each measured with SDK clients and Triton's own per-step
statistics. `python -m perf.breakdown REPOSITORY MODEL`; the model's weights are reused, only configs change."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tokenizers import Tokenizer

from bertserve import Encoder
from bertserve.info import ModelInfo
from bertserve.model_repository import repository
from bertserve.model_repository.deployment import Deployment, PerformanceHint, Runtime
from bertserve.server import ServerConfig, TritonServer, free_ports

from . import workload
from .bench import _machine
from .measure import timed


@dataclass(frozen=True)
class Variant:
    label: str
    deployment: Deployment
    queue_delay_us: Optional[int] = None  # the encoder's batching delay; None: the exporter's


def variants(runtime: Runtime) -> list[Variant]:
    base = Deployment(runtime=runtime)
    found = [Variant("as exported", base), Variant("2 tokenizer instances", dataclasses.replace(base, tokenizer_instances=2)),
             Variant("no encoder batching delay", base, queue_delay_us=0)]
    if runtime is Runtime.OPENVINO:
        found.append(Variant("OpenVINO latency hint", dataclasses.replace(base, performance_hint=PerformanceHint.LATENCY)))
    return found


def _info(source: Path, name: str) -> ModelInfo:
    raw = json.loads((source / name / "bertserve.json").read_text())
    return ModelInfo(**{**raw, "layers": tuple(raw["layers"])})


def _serve_as(source: Path, target: Path, name: str, variant: Variant) -> None:
    """Copy model `name` into `target` with the configs `variant` asks for."""
    info = _info(source, name)
    for folder in (name, *repository.component_names(name)):
        shutil.copytree(source / folder, target / folder)
    tokenizer, encoder, _ = repository.model_configs(info, variant.deployment)
    if variant.queue_delay_us is not None:
        encoder = dataclasses.replace(encoder, dynamic_batching=dataclasses.replace(
            encoder.dynamic_batching, max_queue_delay_microseconds=variant.queue_delay_us))
    for config in (tokenizer, encoder):
        (target / config.name / "config.pbtxt").write_text(config.render())


def measure(source: Path, name: str, seconds: float, clients: int, batch: int, tokens: int) -> list[str]:
    info = _info(source, name)
    tokenizer = Tokenizer.from_file(str(source / f"{name}_tokenizer" / "1" / "tokenizer.json"))
    texts = workload.sentences(tokenizer, batch, tokens)
    machine = _machine()
    lines = [f"{name} ({info.runtime or info.backend}, {info.precision}); {clients} SDK clients x batch {batch}, "
             f"{tokens}-token sentences; {machine['cpu']} ({machine.get('isa', '')})", "",
             "| deployment | sentences/s | p50 ms | tokenizer queue / compute ms | encoder queue / compute ms |",
             "|---|---:|---:|---:|---:|"]
    for variant in variants(Runtime(info.runtime or "onnxruntime")):
        with tempfile.TemporaryDirectory(prefix="bertserve-breakdown-") as scratch:
            repo = Path(scratch)
            _serve_as(source, repo, name, variant)
            http, grpc, metrics = free_ports(3)
            config = ServerConfig(repository=repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                  host="127.0.0.1", heal=False)
            with TritonServer(config) as triton, Encoder(triton.grpc_url, model=name) as encoder:
                result = timed(lambda: len(encoder.encode(texts)), seconds, clients=clients)
                status = {m.name: m for m in encoder.server_status().models}
        tok, enc = (status[n] for n in repository.component_names(name))
        lines.append(f"| {variant.label} | {result.sentences_per_s:.1f} | {result.p50_ms:.1f} | "
                     f"{tok.queue_ms:.1f} / {tok.compute_ms:.1f} | {enc.queue_ms:.1f} / {enc.compute_ms:.1f} |")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.breakdown", description=__doc__)
    parser.add_argument("repository", type=Path)
    parser.add_argument("model")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args(argv)
    print("\n".join(measure(args.repository, args.model, args.seconds, args.clients, args.batch, args.tokens)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
