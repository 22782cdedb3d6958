"""Where a served request's time goes: one exported model re-served under several deployments (tokenizer
instances, OpenVINO hint, encoder batching delay), each measured with SDK clients and Triton's own per-step
statistics. `python -m perf.breakdown REPOSITORY MODEL`; the model's weights are reused, only configs change.

With `--hops`: what each hop costs a one-sentence request instead (perf/hops.py), as a table and, with `--json`,
as JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from tokenizers import Tokenizer

from bertserve import Encoder, contract
from bertserve.model_repository import repository
from bertserve.model_repository.config import parse
from bertserve.model_repository.deployment import PerformanceHint
from bertserve.model_repository.repository import NATIVE_ENCODER_QUEUE_DELAY_US
from bertserve.server import ServerConfig, TritonServer

from . import hops, workload
from .measure import timed
from .results import cpu_text, machine
from .variants import copy_as


def _one_instance_each(tokenizer, encoder) -> None:
    tokenizer.instance_group[0].count = encoder.instance_group[0].count = 1


def _batching_delay(tokenizer, encoder) -> None:
    encoder.dynamic_batching.max_queue_delay_microseconds = NATIVE_ENCODER_QUEUE_DELAY_US


def _latency_hint(tokenizer, encoder) -> None:
    encoder.parameters[contract.PERFORMANCE_HINT].string_value = PerformanceHint.LATENCY.value


@dataclass(frozen=True)
class Variant:
    """One setting changed on the exported configs (tokenizer and encoder protobufs, edited in place)."""

    label: str
    edit: Callable[[Any, Any], None] = lambda tokenizer, encoder: None


def variants(openvino: bool) -> list[Variant]:
    # The exports' defaults, each undone: two instances of each model, no batching delay in the Python backend.
    found = [Variant("as exported"), Variant("1 instance of each model", _one_instance_each),
             Variant("encoder batching delay 2 ms", _batching_delay)]
    return found + ([Variant("OpenVINO latency hint", _latency_hint)] if openvino else [])


def _configs(repo: Path, name: str) -> list[Path]:
    return [repo / folder / "config.pbtxt" for folder in repository.component_names(name)]


def _serve_as(source: Path, target: Path, name: str, variant: Variant) -> None:
    """Copy model `name` into `target`, its configs as exported but for the one setting `variant` changes."""
    copy_as(source, target, name, variant.edit)


def _is_openvino(source: Path, name: str) -> bool:
    _, encoder = (parse(path.read_text()) for path in _configs(source, name))
    return contract.ENCODER_RUNTIME in encoder.parameters and (
        encoder.parameters[contract.ENCODER_RUNTIME].string_value == "openvino")


def measure(source: Path, name: str, seconds: float, clients: int, batch: int, tokens: int) -> list[str]:
    info = json.loads((source / name / "bertserve.json").read_text())
    tokenizer = Tokenizer.from_file(str(source / f"{name}_tokenizer" / "1" / "tokenizer.json"))
    texts = workload.sentences(tokenizer, batch, tokens)
    probe = machine()
    lines = [f"{name} ({info[contract.ENCODER_RUNTIME] or info['backend']}, {info['precision']}); {clients} SDK clients x batch {batch}, "
             f"{tokens}-token sentences; {cpu_text(probe)} ({probe.get('isa', '')})", "",
             "| deployment | sentences/s | p50 ms | tokenizer queue / compute ms | encoder queue / compute ms |",
             "|---|---:|---:|---:|---:|"]
    for variant in variants(_is_openvino(source, name)):
        with tempfile.TemporaryDirectory(prefix="bertserve-breakdown-") as scratch:
            repo = Path(scratch)
            _serve_as(source, repo, name, variant)
            with TritonServer(ServerConfig.loopback(repo, heal=False)) as triton, Encoder(triton.grpc_url, model=name) as encoder:
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
    parser.add_argument("--seconds", type=float, default=8.0, help="per deployment, or per request path with --hops")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--hops", action="store_true", help="what each hop costs a one-sentence request")
    parser.add_argument("--json", type=Path, metavar="PATH", help="with --hops: write the figures there too")
    args = parser.parse_args(argv)
    if args.hops:
        return hops.main(args.repository, args.model, args.seconds, args.tokens, args.json)
    print("\n".join(measure(args.repository, args.model, args.seconds, args.clients, args.batch, args.tokens)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
