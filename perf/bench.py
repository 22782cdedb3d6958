"""`make bench`: start bertserve and the baselines, measure them in one run, write results, plots and BENCHMARKS.md."""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import os
import platform
import re
import tempfile
import time
import urllib.parse
import urllib.request
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import openai

from bertserve import Encoder
from bertserve.frontdoor import FrontDoor, FrontDoorConfig
from bertserve.model_repository.deployment import Runtime
from bertserve.server import DEFAULT_MODEL_NAME, ServerConfig, TritonServer, default_model_dir, free_ports

from . import report, workload
from .baselines import (FastEmbedBaseline, InfinityServer, OnnxRuntimeBaseline, OpenVinoBaseline,
                        SentenceTransformersBaseline)
from .keepalive import KeepAliveClient
from .measure import Measurement, timed
from .perf_analyzer import PerfAnalyzer
from .variants import copy_as, padding_ratio

_log = logging.getLogger("bertserve.bench")
ROOT = Path(__file__).resolve().parent
# The instruction sets that decide CPU inference speed, recorded with every run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# The OpenVINO exports the service runs: precision auto (bf16 on CPUs with bf16 units, else fp32), and int8.
OPENVINO, OPENVINO_INT8 = "openvino", "openvino-int8"
# The default model with length grouping off: each batch padded to its longest row, as one block.
UNGROUPED, UNGROUPED_PADDING_RATIO = "ungrouped", 1e9
# The served tokenizer model alone against `tokenizers` in process: both at batch 64, the served one 2 in flight.
TOKENIZER_IN_PROCESS = "HF tokenizers encode_batch (in-process)"
TOKENIZER_SERVED = "bertserve tokenizer model alone (perf_analyzer, HTTP)"
TOKENIZER_BATCH, TOKENIZER_IN_FLIGHT = 64, 2


@dataclass(frozen=True)
class Settings:
    """How much to measure; `quick` keeps the harness working in tests, it proves nothing about speed."""

    seconds: float = 6.0
    window_ms: int = 4000
    stability_percent: int = 50
    tokens: int = 16
    seq_lengths: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    seq_batch: int = 32
    client_batches: tuple[int, ...] = (1, 4, 16, 64, 256)
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16)
    layer_depths: tuple[int, ...] = (-1, -3, -6)
    mixed_lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    many: int = 1024  # sentences in the one large SDK call
    tail_seconds: float = 20.0  # one client, one sentence at a time: long enough for a p99.9 of ~1,000 requests
    tokenizer_lengths: tuple[int, ...] = (16, 128)  # the served tokenizer alone against `tokenizers` in process

    @classmethod
    def quick(cls) -> Settings:
        # Short windows hold a request or two and never look stable: accept any window, speed is not judged here.
        # One point per sweep: every path of the harness runs, and the test suite waits less.
        return cls(seconds=0.5, window_ms=500, stability_percent=100_000, seq_lengths=(8,), seq_batch=4,
                   client_batches=(8,), concurrencies=(2,), layer_depths=(-1, -6), mixed_lengths=(8, 32), many=256,
                   tail_seconds=0.5, tokenizer_lengths=(16,))


@dataclass
class Row:
    """One measurement: which system, under which load, and what it achieved."""

    sweep: str
    system: str
    setting: str
    value: float  # the swept value (tokens, batch, clients, layer)
    result: Measurement
    ratio: Optional[float] = None  # sentences/s relative to sentence-transformers at the same setting
    baseline: Optional[Row] = field(default=None, repr=False, compare=False)


@dataclass
class Results:
    settings: Settings
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, sweep: str, system: str, setting: str, value: float, result: Measurement,
            baseline: Optional[Row] = None) -> Row:
        """Record a measurement; `baseline` is the sentence-transformers row it is compared with."""
        ratio = result.sentences_per_s / baseline.result.sentences_per_s if baseline else None
        row = Row(sweep, system, setting, value, result, ratio, baseline)
        self.rows.append(row)
        _log.info("%-10s %-42s %-28s %9.1f sent/s  p50 %8.2f ms  p99 %8.2f ms%s", sweep, system, setting,
                  result.sentences_per_s, result.p50_ms, result.p99_ms, f"  x{ratio:.2f}" if ratio else "")
        return row

    def keep_faster(self, baseline: Row, again: Measurement) -> None:
        """Machines drift during a run: keep the baseline's faster measurement, and recompute the ratios on it."""
        if again.sentences_per_s > baseline.result.sentences_per_s:
            baseline.result = again
            for row in self.rows:
                if row.baseline is baseline:
                    row.ratio = row.result.sentences_per_s / again.sentences_per_s
        _log.info("baseline %s %s measured again: %.1f sent/s kept", baseline.system, baseline.setting,
                  baseline.result.sentences_per_s)


def _machine() -> dict[str, str]:
    import fastembed
    import onnxruntime
    import openvino
    import sentence_transformers
    import torch

    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "isa": " ".join(f for f in ISA_FLAGS if f in flags),  # those of ISA_FLAGS the CPU has
        "python": platform.python_version(),
        "triton": "2.51.0 (nvidia-pytriton 0.7.0)",
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "openvino": openvino.get_version().split("-")[0],
        "fastembed": fastembed.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def _tokens_metric(metrics_url: str, model: str) -> dict[str, float]:
    """The encoder's real and computed token counters, from Triton's Prometheus endpoint."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    found = {}
    for kind in ("real", "computed"):
        labels = rf'(?=[^}}]*kind="{kind}")(?=[^}}]*model="{re.escape(model)}")[^}}]*'
        match = re.search(rf"bertserve_encoder_tokens_total\{{{labels}\}} (\S+)", text)
        found[kind] = float(match.group(1)) if match else 0.0
    return found


def export_models(settings: Settings, repo: Path) -> None:
    """Export the models the run serves into `repo`; a model already there is reused as it is. A variant that
    differs from the default model only in config is copied from it, not exported again."""
    from bertserve.export import Deployment, ExportConfig, Precision, export_model  # torch: only when exporting

    model_dir = default_model_dir()
    configs = [
        ExportConfig(model_dir=model_dir, repository=repo, name=DEFAULT_MODEL_NAME),
        ExportConfig(model_dir=model_dir, repository=repo, name="int8", precision=Precision.INT8),
        *(ExportConfig(model_dir=model_dir, repository=repo, name=f"layer{layer}", layers=(layer,))
          for layer in settings.layer_depths if layer != -1),
        ExportConfig(model_dir=model_dir, repository=repo, name=OPENVINO, precision=Precision.AUTO,
                     deployment=Deployment(runtime=Runtime.OPENVINO)),
        ExportConfig(model_dir=model_dir, repository=repo, name=OPENVINO_INT8, precision=Precision.INT8,
                     deployment=Deployment(runtime=Runtime.OPENVINO)),
    ]
    for config in configs:
        if _exported(repo, str(config.name), config.deployment.runtime.value, config.precision.value):
            _log.info("reusing %s from %s", config.name, repo)
        else:  # absent, or another export under its name (the default model of a CPU with bf16 units: OpenVINO)
            export_model(dataclasses.replace(config, overwrite=True))
    # The length-grouping lever switched off: every batch runs as one block padded to its longest row.
    if _exported(repo, UNGROUPED):
        _log.info("reusing %s from %s", UNGROUPED, repo)
    else:
        copy_as(repo, repo, DEFAULT_MODEL_NAME, padding_ratio(UNGROUPED_PADDING_RATIO), new_name=UNGROUPED)


def _exported(repo: Path, name: str, runtime: Optional[str] = None, precision: Optional[str] = None) -> bool:
    """Whether `repo` holds model `name`, exported for `runtime` and `precision` where they are given."""
    stamp = repo / name / "bertserve.json"
    if not stamp.is_file():
        return False
    info = json.loads(stamp.read_text())
    return all(want is None or info.get(key) == want for key, want in (("runtime", runtime), ("precision", precision)))


def run(settings: Settings, out: Path, repository: Optional[Path] = None) -> Results:
    model_dir = default_model_dir()
    results = Results(settings, _machine())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bertserve-bench-") as scratch:
        repo = repository or Path(scratch) / "repository"
        export_models(settings, repo)
        from tokenizers import Tokenizer

        tokenizer_file = repo / f"{DEFAULT_MODEL_NAME}_tokenizer" / "1" / "tokenizer.json"
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        texts = workload.sentences(tokenizer, 256, settings.tokens)
        single = texts[:1]

        st = SentenceTransformersBaseline(model_dir)
        ort_baseline = OnnxRuntimeBaseline(repo / f"{DEFAULT_MODEL_NAME}_encoder", tokenizer_file)
        measure = _timer(settings.seconds)

        # Both servers load at once, infinity in the background while tritonserver starts. Nothing is measured
        # until both are ready, and each server sits idle while the others are measured.
        (infinity_port,) = free_ports(1)
        with InfinityServer(model_dir, infinity_port) as infinity, TritonServer(ServerConfig.loopback(repo)) as server:
            infinity.wait_ready()

            # -- in-process baselines ------------------------------------------------------------
            st64 = results.add("headline", st.name, "batch 64", 64, measure(st.encoder(texts[:64])))
            st1 = results.add("headline", st.name, "batch 1", 1, measure(st.encoder(single)))
            ort64 = results.add("headline", ort_baseline.name, "batch 64", 64, measure(ort_baseline.encoder(texts[:64])),
                                st64)
            results.add("headline", ort_baseline.name, "batch 1", 1, measure(ort_baseline.encoder(single)), st1)
            ov64 = _openvino_in_process(results, repo, tokenizer_file, texts, measure, st64, st1)
            fastembed = FastEmbedBaseline(model_dir, Path(scratch) / "fastembed")
            results.add("headline", fastembed.name, "batch 64", 64, measure(fastembed.encoder(texts[:64])), st64)
            results.add("headline", fastembed.name, "batch 1", 1, measure(fastembed.encoder(single)), st1)
            # Without bf16 units (AMX, AVX512-BF16) torch emulates bf16 and runs slower than fp32: measured anyway.
            st_bf16 = SentenceTransformersBaseline(model_dir, bf16_autocast=True)
            st_bf16_64 = results.add("headline", st_bf16.name, "batch 64", 64, measure(st_bf16.encoder(texts[:64])),
                                     st64)
            del fastembed

            # -- peer server ---------------------------------------------------------------------
            results.add("headline", infinity.name, "batch 64", 64, measure(infinity.encoder(texts[:64])), st64)
            results.add("headline", infinity.name, "batch 1", 1, measure(infinity.encoder(single)), st1)
            results.add("headline", infinity.name, "16 clients x batch 1", 16,
                        measure(infinity.encoder(single), clients=16), st64)

            # -- bertserve --------------------------------------------------------------------------
            data = workload.write_input_data(texts, Path(scratch) / "input.json")
            pa = {
                "grpc": PerfAnalyzer(server.grpc_url, "grpc", settings.window_ms, settings.stability_percent),
                "http": PerfAnalyzer(f"127.0.0.1:{server.config.http_port}", "http", settings.window_ms, settings.stability_percent),
            }
            name = "bertserve (perf_analyzer, {})"
            model = DEFAULT_MODEL_NAME
            pa64 = results.add("headline", name.format("gRPC"), "batch 64", 64, pa["grpc"].measure(model, data, 64, 1), st64)
            pa1 = results.add("headline", name.format("gRPC"), "batch 1", 1, pa["grpc"].measure(model, data, 1, 1), st1)
            pa16 = results.add("headline", name.format("gRPC"), "16 clients x batch 1", 16,
                               pa["grpc"].measure(model, data, 1, 16), st64)
            pa_http64 = results.add("headline", name.format("HTTP"), "batch 64", 64,
                                    pa["http"].measure(model, data, 64, 1), st64)
            results.add("headline", name.format("HTTP"), "batch 1", 1, pa["http"].measure(model, data, 1, 1), st1)
            pa_http16 = results.add("headline", name.format("HTTP"), "16 clients x batch 1", 16,
                                    pa["http"].measure(model, data, 1, 16), st64)
            _tokenizer_alone(results, settings, tokenizer_file, pa["http"], Path(scratch))

            with Encoder(server.grpc_url, model=model) as grpc_sdk, Encoder(server.http_url, model=model) as http_sdk:
                sdk = "bertserve (Python SDK, {})"
                sdk64 = results.add("headline", sdk.format("gRPC"), "batch 64", 64,
                                    measure(_sdk_call(grpc_sdk, texts[:64])), st64)
                # One client, one sentence at a time, long enough to see the tail (p99.9, max): gRPC and HTTP.
                tail = _timer(settings.tail_seconds)
                sdk1 = results.add("headline", sdk.format("gRPC"), "batch 1", 1, tail(_sdk_call(grpc_sdk, single)), st1)
                http_sdk1 = results.add("headline", sdk.format("HTTP"), "batch 1", 1, tail(_sdk_call(http_sdk, single)),
                                        st1)
                sdk16 = results.add("headline", sdk.format("gRPC"), "16 clients x batch 1", 16,
                                    measure(_sdk_call(grpc_sdk, single), clients=16), st64)

                # -- the OpenAI front door, through the openai package, next to the SDK ---------------
                with FrontDoor(FrontDoorConfig(triton_url=server.grpc_url, host="127.0.0.1",
                                               openai_port=free_ports(1)[0])) as door:
                    client = openai.OpenAI(base_url=door.openai_url, api_key="none", timeout=60, max_retries=0)
                    doors = "OpenAI API (front door, {})"
                    door64 = {fmt: results.add("frontdoor", doors.format(fmt), "batch 64", 64,
                                               measure(_openai_call(client, texts[:64], fmt)), st64)
                              for fmt in ("base64", "float")}
                    door16 = results.add("frontdoor", doors.format("base64"), "16 clients x batch 1", 16,
                                         measure(_openai_call(client, single, "base64"), clients=16), st64)
                    # The door's own cost, without the openai package's: a keep-alive HTTP connection per thread.
                    plain = _PlainHttpClient(door.openai_url)
                    plain_name = doors.format("base64, plain HTTP client")
                    plain64 = results.add("frontdoor", plain_name, "batch 64", 64, measure(plain.call(texts[:64])), st64)
                    plain16 = results.add("frontdoor", plain_name, "16 clients x batch 1", 16,
                                          measure(plain.call(single), clients=16), st64)
                sdk_rate = {64: sdk64.result.sentences_per_s, 16: sdk16.result.sentences_per_s}
                results.facts.update(
                    frontdoor_batch64_vs_sdk=plain64.result.sentences_per_s / sdk_rate[64],
                    frontdoor_16_vs_sdk=plain16.result.sentences_per_s / sdk_rate[16],
                    openai_batch64_vs_sdk=door64["base64"].result.sentences_per_s / sdk_rate[64],
                    openai_16_vs_sdk=door16.result.sentences_per_s / sdk_rate[16],
                    float_vs_base64=door64["float"].result.sentences_per_s / door64["base64"].result.sentences_per_s,
                )
                results.add("headline", sdk.format("HTTP"), "batch 64", 64, measure(_sdk_call(http_sdk, texts[:64])), st64)
                many = (texts * (settings.many // len(texts) + 1))[: settings.many]
                results.add("headline", sdk.format("gRPC"), f"{settings.many:,} per call (64 x 4 in flight)",
                            settings.many, measure(_sdk_call(grpc_sdk, many)), st64)

                # -- client batch size (the SDK splits batches above the server's 64) ------------
                for batch in settings.client_batches:
                    chunk = (texts * (batch // len(texts) + 1))[:batch]
                    base = results.add("batch", st.name, f"batch {batch}", batch, measure(st.encoder(chunk)))
                    results.add("batch", sdk.format("gRPC"), f"batch {batch}", batch, measure(_sdk_call(grpc_sdk, chunk)), base)

                # -- int8 ----------------------------------------------------------------------
                with Encoder(server.grpc_url, model="int8") as int8_sdk:
                    corpus = workload.mixed(tokenizer, 200, settings.mixed_lengths, seed=7)
                    fp32_vectors = grpc_sdk.encode(corpus)
                    _record_cosines(results, "int8", fp32_vectors, int8_sdk.encode(corpus))
            int8 = results.add("headline", name.format("gRPC") + ", int8", "batch 64", 64,
                               pa["grpc"].measure("int8", data, 64, 1), st64)

            # -- the OpenVINO exports: the same graph on OpenVINO's CPU plugin ---------------------
            ov_pa = {load: results.add("headline", name.format("gRPC") + ", OpenVINO", setting, value,
                                       pa["grpc"].measure(OPENVINO, data, batch, clients), base)
                     for load, setting, value, batch, clients, base in _service_loads(st64, st1)}
            with Encoder(server.grpc_url, model=OPENVINO) as ov_sdk, \
                    Encoder(server.grpc_url, model=OPENVINO_INT8) as ov_int8_sdk:
                ov_sdk_rows = {load: results.add("headline", sdk.format("gRPC") + ", OpenVINO", setting, value,
                                                 measure(_sdk_call(ov_sdk, texts[:batch]), clients=clients), base)
                               for load, setting, value, batch, clients, base in _service_loads(st64, st1)}
                for prefix, encoder in [("openvino", ov_sdk), ("openvino_int8", ov_int8_sdk)]:
                    _record_cosines(results, prefix, fp32_vectors, encoder.encode(corpus))
            ov_int8 = results.add("headline", name.format("gRPC") + ", OpenVINO int8", "batch 64", 64,
                                  pa["grpc"].measure(OPENVINO_INT8, data, 64, 1), st64)

            # -- sequence length --------------------------------------------------------------
            for length in settings.seq_lengths:
                batch_texts = workload.sentences(tokenizer, 64, length)
                base = results.add("seq_len", st.name, f"{length} tokens", length,
                                   measure(st.encoder(batch_texts[: settings.seq_batch])))
                seq_data = workload.write_input_data(batch_texts, Path(scratch) / f"seq{length}.json")
                results.add("seq_len", name.format("gRPC"), f"{length} tokens", length,
                            pa["grpc"].measure(model, seq_data, settings.seq_batch, 1), base)

            # Sweep points the headline already measured (same model, data, batch and clients) reuse its figures.
            # -- concurrent single-sentence clients (dynamic batching) ---------------------------
            for clients in settings.concurrencies:
                measured = {1: pa1, 16: pa16}.get(clients)
                results.add("clients", name.format("gRPC"), f"{clients} clients x batch 1", clients,
                            measured.result if measured else pa["grpc"].measure(model, data, 1, clients), st64)

            # -- pooling layer depth: upper layers cut from the graph ----------------------------
            for layer in settings.layer_depths:
                results.add("layer", name.format("gRPC"), f"layer {layer}", layer, pa64.result if layer == -1 else
                            pa["grpc"].measure(f"layer{layer}", data, 64, 1), st64)

            # -- mixed lengths: padded tokens computed per real token -----------------------------
            mixed_texts = workload.mixed(tokenizer, 256, settings.mixed_lengths)
            mixed_data = workload.write_input_data(mixed_texts, Path(scratch) / "mixed.json")
            for mixed_model, label in [(model, "length groups"), (UNGROUPED, "one padded block")]:
                before = _tokens_metric(server.metrics_url, f"{mixed_model}_encoder")
                results.add("mixed", name.format("gRPC") + f", {label}", "16 clients x batch 1, mixed", 16,
                            pa["grpc"].measure(mixed_model, mixed_data, 1, 16))
                after = _tokens_metric(server.metrics_url, f"{mixed_model}_encoder")
                real = after["real"] - before["real"]
                ratio = (after["computed"] - before["computed"]) / real if real else float("nan")
                results.facts["padding_ratio" if mixed_model == model else "padding_ratio_ungrouped"] = ratio

        results.facts["unstable"] = [point for analyzer in pa.values() for point in analyzer.unstable]
        results.keep_faster(st64, measure(st.encoder(texts[:64])))
        results.keep_faster(st1, measure(st.encoder(single)))
        results.facts.update(
            st_measured_twice=True,
            batch64_vs_st=pa64.ratio, sdk_batch64_vs_st=sdk64.ratio, concurrent16_vs_batch64=(
                pa16.result.sentences_per_s / pa64.result.sentences_per_s),
            single_p50_ms=pa1.result.p50_ms, sdk_single_p50_ms=sdk1.result.p50_ms, st_single_p50_ms=st1.result.p50_ms,
            int8_vs_st=int8.ratio,
            http_concurrent16_vs_batch64=pa_http16.result.sentences_per_s / pa_http64.result.sentences_per_s,
            sdk_concurrent16_vs_batch64=sdk16.result.sentences_per_s / sdk64.result.sentences_per_s,
            onnxruntime_vs_in_process=pa64.result.sentences_per_s / ort64.result.sentences_per_s,
            **_tail_facts("grpc", sdk1.result), **_tail_facts("http", http_sdk1.result),
        )
        if report.cpu_class(results.machine) == report.BF16_UNITS:  # a target there, and quick to measure again
            results.keep_faster(st_bf16_64, measure(st_bf16.encoder(texts[:64])))
        _cpu_runtime_facts(results, {"ONNX Runtime": ({64: pa64, 1: pa1, 16: pa16}, {64: sdk64, 1: sdk1, 16: sdk16}),
                                     "OpenVINO": (ov_pa, ov_sdk_rows)},
                           {"ONNX Runtime": (int8, "int8"), "OpenVINO": (ov_int8, "openvino_int8")}, st_bf16_64, ov64)
    return results


def _tokenizer_alone(results: Results, settings: Settings, tokenizer_file: Path, http: PerfAnalyzer,
                     scratch: Path) -> None:
    """The served tokenizer model fed strings (batch 64, 2 in flight) against `tokenizers` `encode_batch` on the
    same tokenizer.json, in batches of 64, at each of `settings.tokenizer_lengths`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))  # as exported: the padding and truncation the model uses
    for length in settings.tokenizer_lengths:
        texts = workload.sentences(tokenizer, 512, length)
        setting = f"{length} tokens, batch {TOKENIZER_BATCH}"
        in_process = results.add("tokenizer", TOKENIZER_IN_PROCESS, setting, length,
                                 timed(_encode_batches(tokenizer, texts), settings.seconds))
        data = workload.write_input_data(texts, scratch / f"tokenizer{length}.json")
        served = results.add("tokenizer", TOKENIZER_SERVED, f"{setting}, {TOKENIZER_IN_FLIGHT} in flight", length,
                             http.measure(f"{DEFAULT_MODEL_NAME}_tokenizer", data, TOKENIZER_BATCH, TOKENIZER_IN_FLIGHT))
        results.facts[f"tokenizer{length}_vs_in_process"] = (
            served.result.sentences_per_s / in_process.result.sentences_per_s)


def _encode_batches(tokenizer: Any, texts: list[str]) -> Callable[[], int]:
    """A call that tokenizes the next batch of 64 of `texts` in process, round and round (as perf_analyzer cycles)."""
    batches = [texts[i:i + TOKENIZER_BATCH] for i in range(0, len(texts), TOKENIZER_BATCH)]
    turns = itertools.count()
    return lambda: len(tokenizer.encode_batch(batches[next(turns) % len(batches)]))


def _tail_facts(protocol: str, m: Measurement) -> dict[str, float]:
    """One client's latency tail over `protocol`, for the stall target (p99.9 against p50)."""
    return {f"tail_{protocol}_p50_ms": m.p50_ms, f"tail_{protocol}_p999_ms": m.p999_ms,
            f"tail_{protocol}_max_ms": m.max_ms}


def _record_cosines(results: Results, prefix: str, reference: np.ndarray, vectors: np.ndarray) -> None:
    """Mean and lowest cosine of each vector to its fp32 reference, both L2-normalised."""
    cosines = (reference * vectors).sum(axis=1)
    results.facts[f"{prefix}_cosine_mean"] = float(cosines.mean())
    results.facts[f"{prefix}_cosine_min"] = float(cosines.min())


def _service_loads(st64: Row, st1: Row) -> list[tuple]:
    """The loads each service configuration is measured at: key, setting, value, batch, clients, baseline."""
    return [(64, "batch 64", 64, 64, 1, st64), (1, "batch 1", 1, 1, 1, st1),
            (16, "16 clients x batch 1", 16, 1, 16, st64)]


def _openvino_in_process(results: Results, repo: Path, tokenizer_file: Path, texts: list[str],
                         measure: Callable[..., Measurement], st64: Row, st1: Row) -> Row:
    """In-process OpenVINO on the service's graph: batch 64 under the faster hint, batch 1 under the latency hint."""
    baselines = {hint: OpenVinoBaseline(repo / f"{OPENVINO}_encoder", tokenizer_file, hint)
                 for hint in ("LATENCY", "THROUGHPUT")}
    measured = {hint: measure(baseline.encoder(texts[:64])) for hint, baseline in baselines.items()}
    results.facts["openvino_in_process_batch64_by_hint"] = {
        baselines[hint].hint: m.sentences_per_s for hint, m in measured.items()}
    best = max(measured, key=lambda hint: measured[hint].sentences_per_s)
    row = results.add("headline", baselines[best].name, "batch 64", 64, measured[best], st64)
    latency = baselines["LATENCY"]
    results.add("headline", latency.name, "batch 1", 1, measure(latency.encoder(texts[:1])), st1)
    return row


def _cpu_runtime_facts(results: Results, services: dict[str, tuple[dict[int, Row], dict[int, Row]]],
                       int8s: dict[str, tuple[Row, str]], st_bf16_64: Row, ov64: Row) -> None:
    """The facts behind the CPU-class targets.

    "Service" is the configuration (ONNX Runtime or OpenVINO export) with the higher batch-64 throughput in this
    run; "int8" the faster int8 export among those that meet the cosine bar, the faster of all if none does.
    """
    f = results.facts
    best = max(services, key=lambda runtime: services[runtime][0][64].result.sentences_per_s)
    pa, sdk = services[best]
    cosines = {runtime: (f[f"{prefix}_cosine_mean"], f[f"{prefix}_cosine_min"]) for runtime, (_, prefix) in int8s.items()}
    passing = [runtime for runtime, (mean, low) in cosines.items()
               if mean >= report.INT8_COSINE_MEAN and low >= report.INT8_COSINE_MIN]
    int8_best = max(passing or list(int8s), key=lambda runtime: int8s[runtime][0].result.sentences_per_s)
    ov_pa, ov_sdk = services["OpenVINO"]
    ort_pa, ort_sdk = services["ONNX Runtime"]
    # The CPU default's rule (issue 20): OpenVINO, precision auto, unless slower than ONNX Runtime fp32 at a load.
    for load, key in ((1, "batch1"), (64, "batch64"), (16, "clients16")):
        f[f"openvino_vs_onnxruntime_{key}"] = ov_pa[load].result.sentences_per_s / ort_pa[load].result.sentences_per_s
        f[f"openvino_vs_onnxruntime_sdk_{key}"] = (
            ov_sdk[load].result.sentences_per_s / ort_sdk[load].result.sentences_per_s)
    f.update(
        service=best, service_batch64_vs_st=pa[64].ratio, service_sdk_batch64_vs_st=sdk[64].ratio,
        service_vs_st_bf16=pa[64].result.sentences_per_s / st_bf16_64.result.sentences_per_s,
        service_concurrent16_vs_batch64=pa[16].result.sentences_per_s / pa[64].result.sentences_per_s,
        service_single_p50_ms=pa[1].result.p50_ms, service_sdk_single_p50_ms=sdk[1].result.p50_ms,
        st_bf16_vs_st=st_bf16_64.ratio,
        openvino_vs_in_process=ov_pa[64].result.sentences_per_s / ov64.result.sentences_per_s,
        openvino_sdk_vs_in_process=ov_sdk[64].result.sentences_per_s / ov64.result.sentences_per_s,
        openvino_in_process=ov64.system,
        int8_service=int8_best, int8_service_vs_st=int8s[int8_best][0].ratio,
        int8_service_cosine_mean=cosines[int8_best][0], int8_service_cosine_min=cosines[int8_best][1],
    )


def _timer(seconds: float) -> Callable[..., Measurement]:
    return lambda call, clients=1: timed(call, seconds, clients)


def _sdk_call(encoder: Encoder, batch: list[str]) -> Callable[[], int]:
    return lambda: len(encoder.encode(batch, progress=False))


class _PlainHttpClient:
    """POST /v1/embeddings (base64) with the standard library, one keep-alive connection per thread."""

    def __init__(self, base_url: str) -> None:
        address = urllib.parse.urlsplit(base_url)
        self._http, self._path = KeepAliveClient(address.hostname, address.port, timeout=60), address.path + "/embeddings"

    def call(self, batch: list[str]) -> Callable[[], int]:
        body = json.dumps({"model": DEFAULT_MODEL_NAME, "input": batch, "encoding_format": "base64"}).encode()

        def post() -> int:
            status, answer = self._http.post(self._path, body)
            if status != 200:
                raise RuntimeError(f"the front door answered {status}: {answer[:200]!r}")
            rows = json.loads(answer)["data"]
            return len([np.frombuffer(base64.b64decode(row["embedding"]), "<f4") for row in rows])

        return post


def _openai_call(client: Any, batch: list[str], encoding_format: str) -> Callable[[], int]:
    return lambda: len(client.embeddings.create(model=DEFAULT_MODEL_NAME, input=batch,
                                                encoding_format=encoding_format).data)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="results, plots (default: perf/results)")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="the table to regenerate")
    parser.add_argument("--quick", action="store_true", help="tiny settings that only check the harness works")
    parser.add_argument("--repository", type=Path, metavar="DIR",
                        help="export the measured models into DIR and reuse those already there "
                             "(default: a fresh temporary repository)")
    parser.add_argument("--from-results", type=Path, metavar="JSON",
                        help="re-render the table and plots from a results.json instead of measuring")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings.quick() if args.quick else Settings()
    started = time.monotonic()
    results = report.load(args.from_results) if args.from_results else run(settings, args.out, args.repository)
    report.write(results, args.out, args.markdown)
    _log.info("benchmark done in %.0f s: %s, %s", time.monotonic() - started, args.out, args.markdown)
    return 0
