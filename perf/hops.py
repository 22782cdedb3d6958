"""What each hop costs a one-sentence request, on an exported model served by a real tritonserver.

One client sends one sentence at a time, for a few seconds per request path: the ensemble over gRPC and HTTP, the
tokenizer model alone (fed strings), the encoder model alone (fed ids), the two called one after the other from
the client, and the ensemble again with the encoder's batcher delay at 0. For each path: the client's p50, p99.9
and max, and Triton's own per-model statistics over exactly those requests (queue, compute input, infer, output).
`python -m perf.breakdown REPOSITORY MODEL --hops [--json PATH]`; the export is copied, never modified.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from tokenizers import Tokenizer

from bertserve import contract
from bertserve.model_repository.repository import NATIVE_ENCODER_QUEUE_DELAY_US, component_names
from bertserve.server import ServerConfig, TritonServer

from . import workload
from .measure import Tail, tail
from .results import cpu_text, machine
from .variants import copy_as

# The per-request steps Triton times for each model, in the order a request goes through them.
STEPS = ("queue", "compute_input", "compute_infer", "compute_output")
TOKEN_TENSORS = contract.TOKEN_TENSORS
# The batcher delay the ensemble is measured again with: 0 where the export has one, this where it has none.
DELAY_US = NATIVE_ENCODER_QUEUE_DELAY_US  # the delay an export without one is compared with
OTHER_DELAY = "ensemble, gRPC, the encoder's other batcher delay"


@dataclass(frozen=True)
class StepTimes:
    """One model's mean time per successful request in each Triton step, over one measurement."""

    requests: int
    executions: int
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float

    def cell(self) -> str:
        """`queue / input / infer / output` ms, for the table."""
        return " / ".join(f"{getattr(self, f'{step}_ms'):.2f}" for step in STEPS)


@dataclass(frozen=True)
class Hop:
    """One request path measured: client-side latency, and each model's own statistics over those requests."""

    path: str
    client: Tail
    models: dict[str, StepTimes]


def step_times(before: dict[str, Any], after: dict[str, Any]) -> StepTimes:
    """The mean per-request step times between two statistics entries of one model (Triton's JSON, gRPC or HTTP)."""

    def count(entry: dict[str, Any], key: str, field: str = "count") -> int:
        return int(entry.get("inference_stats", {}).get(key, {}).get(field, 0))

    requests = count(after, "success") - count(before, "success")
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    means = {f"{step}_ms": (count(after, step, "ns") - count(before, step, "ns")) / 1e6 / requests if requests else 0.0
             for step in STEPS}
    return StepTimes(requests, executions, **means)


class _Client:
    """tritonclient for one protocol: one-sentence requests to the ensemble, the tokenizer or the encoder."""

    def __init__(self, triton: TritonServer, protocol: str) -> None:
        if protocol == "grpc":
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(f"127.0.0.1:{triton.config.grpc_port}")
        else:
            import tritonclient.http as module

            self._client = module.InferenceServerClient(f"127.0.0.1:{triton.config.http_port}")
        self._module, self.protocol = module, protocol

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        tensors = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "INT64")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = self._client.infer(model, tensors, outputs=[self._module.InferRequestedOutput(o) for o in outputs])
        return {name: result.as_numpy(name) for name in outputs}

    def statistics(self) -> dict[str, dict[str, Any]]:
        """Every loaded model's statistics entry, by name."""
        stats = self._client.get_inference_statistics(as_json=True) if self.protocol == "grpc" else (
            self._client.get_inference_statistics())
        return {entry["name"]: entry for entry in stats.get("model_stats", [])}

    def close(self) -> None:
        self._client.close()


def _text(sentence: str) -> dict[str, np.ndarray]:
    return {contract.TEXT: np.array([[sentence.encode()]], dtype=object)}


def _ids(tokenizer: Tokenizer, sentence: str) -> dict[str, np.ndarray]:
    """The encoder's inputs for one sentence, as the tokenizer model makes them (no padding for one row)."""
    encoding = tokenizer.encode(sentence)
    return {contract.INPUT_IDS: np.array([encoding.ids], dtype=np.int64),
            contract.ATTENTION_MASK: np.array([encoding.attention_mask], dtype=np.int64),
            contract.TOKEN_TYPE_IDS: np.array([encoding.type_ids], dtype=np.int64)}


def _latencies(call: Callable[[], object], seconds: float, warmup: int = 5) -> Tail:
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return tail(np.array(latencies) * 1000)


def _measure(path: str, client: _Client, models: tuple[str, ...], call: Callable[[], object], seconds: float) -> Hop:
    """Time `call` from one client and read each of `models`' statistics over exactly the requests it made."""
    for _ in range(5):  # warm-up, outside the statistics window
        call()
    before = client.statistics()
    measured = _latencies(call, seconds, warmup=0)
    after = client.statistics()
    return Hop(path, measured, {model: step_times(before[model], after[model]) for model in models})


def _paths(triton: TritonServer, name: str, tokenizer: Tokenizer, sentence: str, seconds: float) -> list[Hop]:
    """The request paths of one served export, each one sentence at a time."""
    tok_model, enc_model = component_names(name)
    hops = []
    grpc, http = _Client(triton, "grpc"), _Client(triton, "http")
    try:
        ids = _ids(tokenizer, sentence)
        tok_outputs = (*TOKEN_TENSORS, contract.TOKEN_COUNT)

        def tokenize_then_encode() -> object:
            tokens = grpc.infer(tok_model, _text(sentence), tok_outputs)
            return grpc.infer(enc_model, {k: tokens[k] for k in TOKEN_TENSORS}, (contract.EMBEDDING,))

        for label, client in (("gRPC", grpc), ("HTTP", http)):
            hops.append(_measure(f"ensemble, {label}", client, (name, tok_model, enc_model),
                                 lambda c=client: c.infer(name, _text(sentence), (contract.EMBEDDING,)), seconds))
        hops.append(_measure("tokenizer model alone, gRPC (strings in)", grpc, (tok_model,),
                             lambda: grpc.infer(tok_model, _text(sentence), tok_outputs), seconds))
        hops.append(_measure("encoder model alone, gRPC (ids in)", grpc, (enc_model,),
                             lambda: grpc.infer(enc_model, ids, (contract.EMBEDDING,)), seconds))
        hops.append(_measure("tokenizer then encoder from the client, gRPC", grpc, (tok_model, enc_model),
                             tokenize_then_encode, seconds))
    finally:
        grpc.close()
        http.close()
    return hops


def _other_delay(exported_us: int) -> Callable[[Any, Any], None]:
    """An edit that sets the encoder's batcher delay to 0 if the export has one, else to DELAY_US."""

    def edit(tokenizer: Any, encoder: Any) -> None:
        encoder.dynamic_batching.max_queue_delay_microseconds = 0 if exported_us else DELAY_US

    return edit


def _delay_us(source: Path, name: str) -> int:
    from bertserve.model_repository.config import parse

    encoder = parse((source / component_names(name)[1] / "config.pbtxt").read_text())
    return encoder.dynamic_batching.max_queue_delay_microseconds


def measure(source: Path, name: str, seconds: float, tokens: int) -> dict[str, Any]:
    """Every hop's figures for model `name` of repository `source` (copied, served, measured), as JSON-ready data."""
    tokenizer = Tokenizer.from_file(str(source / f"{name}_tokenizer" / "1" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    sentence = workload.sentences(tokenizer, 1, tokens)[0]
    in_process = _latencies(lambda: tokenizer.encode_batch([sentence]), seconds)
    hops: list[Hop] = []
    exported_us = _delay_us(source, name)
    for edit, label in ((lambda tok, enc: None, None), (_other_delay(exported_us), OTHER_DELAY)):
        with tempfile.TemporaryDirectory(prefix="bertserve-hops-") as scratch:
            copy_as(source, Path(scratch), name, edit)
            with TritonServer(ServerConfig.loopback(Path(scratch), heal=False)) as triton:
                if label is None:
                    hops += _paths(triton, name, tokenizer, sentence, seconds)
                else:
                    client = _Client(triton, "grpc")
                    try:
                        hops.append(_measure(label, client, (name, *component_names(name)),
                                             lambda: client.infer(name, _text(sentence), (contract.EMBEDDING,)), seconds))
                    finally:
                        client.close()
    return {"model": name, "sentence_tokens": tokens, "seconds": seconds, "machine": machine(),
            "encoder_max_queue_delay_us": exported_us, "other_max_queue_delay_us": 0 if exported_us else DELAY_US,
            "in_process_tokenizer": asdict(in_process),
            "hops": [asdict(hop) for hop in hops], "costs": costs(hops, in_process, exported_us)}


def costs(hops: list[Hop], in_process_tokenizer: Tail, exported_delay_us: int) -> dict[str, float]:
    """What each hop adds to a one-sentence request's client p50, in ms, from the measured paths; the batcher
    delay's cost is the ensemble with the delay less the ensemble without, whichever of the two was exported."""
    by_path = {hop.path: hop for hop in hops}
    p50 = {path: hop.client.p50_ms for path, hop in by_path.items()}
    tok = by_path["tokenizer model alone, gRPC (strings in)"]
    (tok_name,) = tok.models
    found = {
        "http_over_grpc_ms": p50["ensemble, HTTP"] - p50["ensemble, gRPC"],
        "ensemble_over_two_calls_ms": p50["ensemble, gRPC"] - p50["tokenizer then encoder from the client, gRPC"],
        "tokenizer_round_trip_ms": p50["tokenizer model alone, gRPC (strings in)"],
        "tokenizer_round_trip_over_in_process_ms": (p50["tokenizer model alone, gRPC (strings in)"]
                                                    - in_process_tokenizer.p50_ms),
        "tokenizer_triton_infer_ms": tok.models[tok_name].compute_infer_ms,
        "encoder_round_trip_ms": p50["encoder model alone, gRPC (ids in)"],
    }
    if OTHER_DELAY in p50:
        with_delay, without = ("ensemble, gRPC", OTHER_DELAY) if exported_delay_us else (OTHER_DELAY, "ensemble, gRPC")
        found["batcher_delay_ms"] = p50[with_delay] - p50[without]
    return found


def table(data: dict[str, Any]) -> list[str]:
    """The measured paths and the hop costs, as markdown."""
    m = data["machine"]
    lines = [f"{data['model']}, one {data['sentence_tokens']}-token sentence per request, one client, {data['seconds']:g} s per "
             f"path; encoder max_queue_delay {data['encoder_max_queue_delay_us']} µs as exported (the other delay: "
             f"{data['other_max_queue_delay_us']} µs); "
             f"{cpu_text(m)} (ISA: {m.get('isa', '')})", "",
             "| request path | requests | client p50 ms | p99.9 ms | max ms | per model: queue / input / infer / output ms |",
             "|---|---:|---:|---:|---:|---|"]
    for hop in data["hops"]:
        client = hop["client"]
        models = "; ".join(f"{model}: {StepTimes(**times).cell()}" for model, times in hop["models"].items())
        lines.append(f"| {hop['path']} | {client['requests']} | {client['p50_ms']:.2f} | {client['p999_ms']:.2f} | "
                     f"{client['max_ms']:.2f} | {models} |")
    c, tok = data["costs"], data["in_process_tokenizer"]
    lines += ["", "| hop | cost to a one-sentence request (client p50) |", "|---|---:|",
              f"| HTTP instead of gRPC (ensemble) | {c['http_over_grpc_ms']:+.2f} ms |",
              f"| the ensemble instead of tokenizer then encoder called from the client | "
              f"{c['ensemble_over_two_calls_ms']:+.2f} ms |",
              f"| tokenizer model round trip (Triton infer {c['tokenizer_triton_infer_ms']:.2f} ms; in-process "
              f"`tokenizers` {tok['p50_ms']:.3f} ms) | {c['tokenizer_round_trip_ms']:.2f} ms |",
              f"| encoder model round trip, fed ids | {c['encoder_round_trip_ms']:.2f} ms |"]
    if "batcher_delay_ms" in c:
        delay = max(data["encoder_max_queue_delay_us"], data["other_max_queue_delay_us"])
        lines.append(f"| encoder batcher delay ({delay} µs against 0) | "
                     f"{c['batcher_delay_ms']:+.2f} ms |")
    return lines


def main(repository: Path, model: str, seconds: float, tokens: int, out: Optional[Path]) -> int:
    """Measure, print the tables, and write the JSON to `out` when given."""
    data = measure(repository, model, seconds, tokens)
    print("\n".join(table(data)))
    if out is not None:
        out.write_text(json.dumps(data, indent=2) + "\n")
    return 0
