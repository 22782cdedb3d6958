"""`make bench`: start bertserve and the baselines, measure them in one run, write results, plots and BENCHMARKS.md."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import itertools
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import openai

from bertserve import Encoder, TruncationWarning, contract
from bertserve.errors import ConfigError
from bertserve.frontdoor import FrontDoor, FrontDoorConfig
from bertserve.model_repository.deployment import Runtime
from bertserve.server import DEFAULT_MODEL_NAME, ServerConfig, TritonServer, default_model_dir, free_ports

from . import cache, recall, report, rerank, workload
from .baselines import (FastEmbedBaseline, InfinityServer, OnnxRuntimeBaseline, OpenVinoBaseline,
                        SentenceTransformersBaseline)
from .keepalive import KeepAliveClient
from .measure import Measurement, timed
from .perf_analyzer import PerfAnalyzer
from .rerank import CROSS_ENCODER, RERANK_DOOR, RERANK_MODEL, RERANK_SDK, CrossEncoderBaseline, DoorReranker
from .results import Results, Row, Settings, load, machine
from .variants import copy_as, padding_ratio, unchanged

_log = logging.getLogger("bertserve.bench")
ROOT = Path(__file__).resolve().parent
# The OpenVINO exports the service runs: precision auto (bf16 on CPUs with bf16 units, else fp32), and int8.
OPENVINO, OPENVINO_INT8 = "openvino", "openvino-int8"
# The default model with length grouping off: each batch padded to its longest row, as one block.
UNGROUPED, UNGROUPED_PADDING_RATIO = "ungrouped", 1e9
# The served tokenizer model alone against `tokenizers` in process: both at batch 64, the served one 2 in flight.
TOKENIZER_IN_PROCESS = "HF tokenizers encode_batch (in-process)"
TOKENIZER_SERVED = "bertserve tokenizer model alone (perf_analyzer, HTTP)"
TOKENIZER_BATCH, TOKENIZER_IN_FLIGHT = 64, 2
# The systems bertserve is measured as, by protocol ("gRPC", "HTTP") or encoding ("base64", "float").
PERF_ANALYZER = "bertserve (perf_analyzer, {})"
SDK = "bertserve (Python SDK, {})"
DOOR = "OpenAI API (front door, {})"
# The loads each service configuration is measured at: key, setting, value, batch, clients. The key is also that
# of the sentence-transformers row each is compared with (`_Bench.base`).
_SERVICE_LOADS = ((64, "batch 64", 64, 64, 1), (1, "batch 1", 1, 1, 1), (16, "16 clients x batch 1", 16, 1, 16))
_RowsByLoad = dict[int, Row]  # rows by the key of `_SERVICE_LOADS`


def _tokens_metric(metrics_url: str, model: str) -> dict[str, float]:
    """The encoder's real and computed token counters, from Triton's Prometheus endpoint."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    found = {}
    for kind in ("real", "computed"):
        labels = rf'(?=[^}}]*kind="{kind}")(?=[^}}]*model="{re.escape(model)}")[^}}]*'
        match = re.search(rf"bertserve_encoder_tokens_total\{{{labels}\}} (\S+)", text)
        found[kind] = float(match.group(1)) if match else 0.0
    return found


def export_models(settings: Settings, repo: Path, cross_encoder: Optional[Path] = None) -> None:
    """Export the models the run serves into `repo`; a model already there is reused as it is. A variant that
    differs from the default model only in config is copied from it, not exported again. The rerank model is
    exported from `cross_encoder` (`rerank.cross_encoder_folder`), built in a temporary folder when not given."""
    from bertserve.export import (Deployment, ExportConfig, Precision, default_encoder,  # torch: only when exporting
                                  export_model)

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
    # The rerank model as `bertserve export` exports it on this CPU: OpenVINO (precision auto) on bf16 units.
    runtime, precision = default_encoder()
    if _exported(repo, RERANK_MODEL, runtime.value, precision.value, contract.Task.RERANK.value):
        _log.info("reusing %s from %s", RERANK_MODEL, repo)
    else:
        with tempfile.TemporaryDirectory(prefix="bertserve-cross-encoder-") as built:
            source = cross_encoder or rerank.cross_encoder_folder(model_dir, Path(built) / "cross-encoder")
            export_model(ExportConfig(model_dir=source, repository=repo, name=RERANK_MODEL, task=contract.Task.RERANK,
                                      precision=precision, deployment=Deployment(runtime=runtime), overwrite=True))


def _exported(repo: Path, name: str, runtime: Optional[str] = None, precision: Optional[str] = None,
              task: Optional[str] = None) -> bool:
    """Whether `repo` holds model `name`, exported for `runtime`, `precision` and `task` where they are given."""
    stamp = repo / name / "bertserve.json"
    if not stamp.is_file():
        return False
    info = json.loads(stamp.read_text())
    return all(want is None or info.get(key) == want
               for key, want in ((contract.ENCODER_RUNTIME, runtime), ("precision", precision), ("task", task)))


@dataclass
class _Bench:
    """What the sweeps of one run share: what to measure, where it goes, the sentences, the servers."""

    settings: Settings
    results: Results
    scratch: Path
    repo: Path
    tokenizer: Any  # `tokenizers.Tokenizer` without padding or truncation, for making sentences
    tokenizer_file: Path  # the served tokenizer's, as exported
    texts: list[str]  # 256 sentences of `settings.tokens` tokens
    st: SentenceTransformersBaseline
    cross_encoder: CrossEncoderBaseline  # the rerank model in process, as the service's rerank model was exported
    server: TritonServer
    pa: dict[str, PerfAnalyzer]  # by protocol: "grpc", "http"
    data: Path  # `texts` as perf_analyzer's input data
    base: _RowsByLoad = field(default_factory=dict)  # sentence-transformers rows by load, from the first sweep

    @property
    def single(self) -> list[str]:
        """One sentence: the batch-1 request."""
        return self.texts[:1]

    def measure(self, call: Callable[[], int], clients: int = 1) -> Measurement:
        """`call` in `clients` closed loops for the run's seconds."""
        return timed(call, self.settings.seconds, clients, self.settings.warmup)

    def add(self, sweep: str, system: str, setting: str, value: float, result: Measurement,
            baseline: Optional[Row] = None) -> Row:
        """Record a measurement in the run's results (`Results.add`)."""
        return self.results.add(sweep, system, setting, value, result, baseline)


class _InProcessRows(NamedTuple):
    """What the closing facts need from the in-process baselines."""

    ort64: Row
    ov64: Row
    st_bf16: SentenceTransformersBaseline
    st_bf16_64: Row


class _ServedRows(NamedTuple):
    """What the closing facts need from bertserve's sweeps."""

    pa: dict[str, _RowsByLoad]  # by protocol label: "gRPC", "HTTP"
    sdk: dict[str, _RowsByLoad]  # "gRPC" at every load, "HTTP" at batch 1 (the tail)
    int8: Row
    openvino_pa: _RowsByLoad
    openvino_sdk: _RowsByLoad
    openvino_int8: Row


def run(settings: Settings, out: Path, repository: Optional[Path] = None) -> Results:
    """Measure bertserve and the baselines in one run: the headline, every sweep, and the facts of the targets."""
    model_dir = default_model_dir()
    results = Results(settings, machine())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bertserve-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        repo = repository or scratch / "repository"
        cross_encoder = rerank.cross_encoder_folder(model_dir, scratch / "cross-encoder")
        export_models(settings, repo, cross_encoder)
        from tokenizers import Tokenizer

        tokenizer_file = repo / f"{DEFAULT_MODEL_NAME}_tokenizer" / "1" / "tokenizer.json"
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        texts = workload.sentences(tokenizer, 256, settings.tokens)
        st = SentenceTransformersBaseline(model_dir)
        ort = OnnxRuntimeBaseline(repo / f"{DEFAULT_MODEL_NAME}_encoder", tokenizer_file)

        # Both servers load at once, infinity in the background while tritonserver starts. Nothing is measured
        # until both are ready, and each server sits idle while the others are measured.
        (infinity_port,) = free_ports(1)
        with InfinityServer(model_dir, infinity_port) as infinity, TritonServer(ServerConfig.loopback(repo)) as server:
            infinity.wait_ready()
            bench = _Bench(settings, results, scratch, repo, tokenizer, tokenizer_file, texts, st,
                           CrossEncoderBaseline(cross_encoder), server, _analyzers(settings, server),
                           workload.write_input_data(texts, scratch / "input.json"))
            in_process = _in_process_baselines(bench, ort, model_dir)
            _peer_server(bench, infinity)
            served = _bertserve(bench)
        _closing_facts(bench, in_process, served)
    return results


def _analyzers(settings: Settings, server: TritonServer) -> dict[str, PerfAnalyzer]:
    """perf_analyzer against `server` over each protocol."""
    return {"grpc": PerfAnalyzer(server.grpc_url, "grpc", settings.window_ms, settings.stability_percent),
            "http": PerfAnalyzer(f"127.0.0.1:{server.config.http_port}", "http", settings.window_ms,
                                 settings.stability_percent)}


def _service_rows(b: _Bench, system: str, measure_at: Callable[[int, int], Measurement]) -> _RowsByLoad:
    """Headline rows of `system` at each of `_SERVICE_LOADS` in turn, measured by `measure_at(batch, clients)`."""
    return {load: b.add("headline", system, setting, value, measure_at(batch, clients), b.base[load])
            for load, setting, value, batch, clients in _SERVICE_LOADS}


# -- in-process baselines -------------------------------------------------------


def _in_process_baselines(b: _Bench, ort: OnnxRuntimeBaseline, model_dir: Path) -> _InProcessRows:
    """sentence-transformers (the baseline every ratio is to), ONNX Runtime, OpenVINO and fastembed on the same
    sentences in this process, and sentence-transformers under bf16 autocast."""
    texts, single = b.texts, b.single
    st64 = b.add("headline", b.st.name, "batch 64", 64, b.measure(b.st.encoder(texts[:64])))
    st1 = b.add("headline", b.st.name, "batch 1", 1, b.measure(b.st.encoder(single)))
    b.base.update({64: st64, 1: st1, 16: st64})
    ort64 = b.add("headline", ort.name, "batch 64", 64, b.measure(ort.encoder(texts[:64])), st64)
    b.add("headline", ort.name, "batch 1", 1, b.measure(ort.encoder(single)), st1)
    ov64 = _openvino_in_process(b.results, b.repo, b.tokenizer_file, texts, b.measure, st64, st1)
    fastembed = FastEmbedBaseline(model_dir, b.scratch / "fastembed")  # freed on return
    b.add("headline", fastembed.name, "batch 64", 64, b.measure(fastembed.encoder(texts[:64])), st64)
    b.add("headline", fastembed.name, "batch 1", 1, b.measure(fastembed.encoder(single)), st1)
    # Without bf16 units (AMX, AVX512-BF16) torch emulates bf16 and runs slower than fp32: measured anyway.
    st_bf16 = SentenceTransformersBaseline(model_dir, bf16_autocast=True)
    st_bf16_64 = b.add("headline", st_bf16.name, "batch 64", 64, b.measure(st_bf16.encoder(texts[:64])), st64)
    return _InProcessRows(ort64, ov64, st_bf16, st_bf16_64)


def _peer_server(b: _Bench, infinity: InfinityServer) -> None:
    """infinity, the peer embedding server, at each of `_SERVICE_LOADS`."""
    _service_rows(b, infinity.name, lambda batch, clients: b.measure(infinity.encoder(b.texts[:batch]), clients))


# -- bertserve --------------------------------------------------------------------


def _bertserve(b: _Bench) -> _ServedRows:
    """Every bertserve measurement, in the order BENCHMARKS.md lists them: perf_analyzer, the tokenizer alone, the
    SDK, the front door, int8, OpenVINO, the sweeps, rerank, then the response cache and compact vectors' recall.
    One front door serves the whole run (idle while it is not measured)."""
    pa = {label: _service_rows(b, PERF_ANALYZER.format(label), partial(b.pa[protocol].measure, DEFAULT_MODEL_NAME,
                                                                          b.data))
          for protocol, label in (("grpc", "gRPC"), ("http", "HTTP"))}
    _tokenizer_alone(b.results, b.settings, b.tokenizer_file, b.pa["http"], b.scratch)
    with FrontDoor(FrontDoorConfig(triton_url=b.server.grpc_url, host="127.0.0.1",
                                   openai_port=free_ports(1)[0])) as door:
        with Encoder(b.server.grpc_url, model=DEFAULT_MODEL_NAME) as grpc_sdk, \
                Encoder(b.server.http_url, model=DEFAULT_MODEL_NAME) as http_sdk:
            sdk = _sdk_headline(b, grpc_sdk, http_sdk)
            _front_door(b, sdk["gRPC"], door.openai_url)
            _sdk_batch_sizes(b, grpc_sdk, http_sdk)
            corpus, fp32_vectors = _int8_cosines(b, grpc_sdk)
        int8 = b.add("headline", PERF_ANALYZER.format("gRPC") + ", int8", "batch 64", 64,
                     b.pa["grpc"].measure("int8", b.data, 64, 1), b.base[64])
        openvino = _openvino_service(b, corpus, fp32_vectors)
        _sequence_lengths(b)
        _concurrency(b, pa["gRPC"])
        _layer_depths(b, pa["gRPC"][64])
        _mixed_lengths(b)
        _rerank(b, door.openai_url)
    _response_cache(b)
    _compact_recall(b)
    return _ServedRows(pa, sdk, int8, *openvino)


def _sdk_headline(b: _Bench, grpc_sdk: Encoder, http_sdk: Encoder) -> dict[str, _RowsByLoad]:
    """The Python SDK at each load; at batch 1 one client for `tail_seconds`, long enough to see the tail."""
    st64, st1, single = b.base[64], b.base[1], b.single
    sdk64 = b.add("headline", SDK.format("gRPC"), "batch 64", 64, b.measure(_sdk_call(grpc_sdk, b.texts[:64])), st64)
    # One client, one sentence at a time, long enough to see the tail (p99.9, max): gRPC and HTTP.
    tail = _timer(b.settings.tail_seconds, b.settings.warmup)
    sdk1 = b.add("headline", SDK.format("gRPC"), "batch 1", 1, tail(_sdk_call(grpc_sdk, single)), st1)
    http_sdk1 = b.add("headline", SDK.format("HTTP"), "batch 1", 1, tail(_sdk_call(http_sdk, single)), st1)
    sdk16 = b.add("headline", SDK.format("gRPC"), "16 clients x batch 1", 16,
                  b.measure(_sdk_call(grpc_sdk, single), clients=16), st64)
    return {"gRPC": {64: sdk64, 1: sdk1, 16: sdk16}, "HTTP": {1: http_sdk1}}


def _front_door(b: _Bench, sdk: _RowsByLoad, door_url: str) -> None:
    """The OpenAI front door at `door_url` through the openai package and through a plain HTTP client, next to the
    SDK."""
    st64, texts, single, measure = b.base[64], b.texts, b.single, b.measure
    client = openai.OpenAI(base_url=door_url, api_key="none", timeout=60, max_retries=0)
    door64 = {fmt: b.add("frontdoor", DOOR.format(fmt), "batch 64", 64,
                         measure(_openai_call(client, texts[:64], fmt)), st64)
              for fmt in ("base64", "float")}
    door16 = b.add("frontdoor", DOOR.format("base64"), "16 clients x batch 1", 16,
                   measure(_openai_call(client, single, "base64"), clients=16), st64)
    # The door's own cost, without the openai package's: a keep-alive HTTP connection per thread.
    plain = _PlainHttpClient(door_url)
    plain_name = DOOR.format("base64, plain HTTP client")
    plain64 = b.add("frontdoor", plain_name, "batch 64", 64, measure(plain.call(texts[:64])), st64)
    plain16 = b.add("frontdoor", plain_name, "16 clients x batch 1", 16, measure(plain.call(single), clients=16),
                    st64)
    sdk_rate = {64: sdk[64].result.sentences_per_s, 16: sdk[16].result.sentences_per_s}
    b.results.facts.update(
        frontdoor_batch64_vs_sdk=plain64.result.sentences_per_s / sdk_rate[64],
        frontdoor_16_vs_sdk=plain16.result.sentences_per_s / sdk_rate[16],
        openai_batch64_vs_sdk=door64["base64"].result.sentences_per_s / sdk_rate[64],
        openai_16_vs_sdk=door16.result.sentences_per_s / sdk_rate[16],
        float_vs_base64=door64["float"].result.sentences_per_s / door64["base64"].result.sentences_per_s,
    )


def _sdk_batch_sizes(b: _Bench, grpc_sdk: Encoder, http_sdk: Encoder) -> None:
    """The SDK over HTTP at batch 64, one call of `many` sentences, and the client batch sweep (the SDK splits
    batches above the server's 64)."""
    settings, texts, st64 = b.settings, b.texts, b.base[64]
    b.add("headline", SDK.format("HTTP"), "batch 64", 64, b.measure(_sdk_call(http_sdk, texts[:64])), st64)
    many = (texts * (settings.many // len(texts) + 1))[: settings.many]
    b.add("headline", SDK.format("gRPC"), f"{settings.many:,} per call (64 x 4 in flight)", settings.many,
          b.measure(_sdk_call(grpc_sdk, many)), st64)
    for batch in settings.client_batches:
        chunk = (texts * (batch // len(texts) + 1))[:batch]
        base = b.add("batch", b.st.name, f"batch {batch}", batch, b.measure(b.st.encoder(chunk)))
        b.add("batch", SDK.format("gRPC"), f"batch {batch}", batch, b.measure(_sdk_call(grpc_sdk, chunk)), base)


def _int8_cosines(b: _Bench, grpc_sdk: Encoder) -> tuple[list[str], np.ndarray]:
    """The int8 export's vectors against fp32 on a mixed-length corpus; the corpus and its fp32 vectors."""
    with Encoder(b.server.grpc_url, model="int8") as int8_sdk:
        corpus = workload.mixed(b.tokenizer, 200, b.settings.mixed_lengths, seed=7)
        fp32_vectors = grpc_sdk.encode(corpus)
        _record_cosines(b.results, "int8", fp32_vectors, int8_sdk.encode(corpus))
    return corpus, fp32_vectors


def _openvino_service(b: _Bench, corpus: list[str], fp32_vectors: np.ndarray) -> tuple[_RowsByLoad, _RowsByLoad, Row]:
    """The OpenVINO exports, the same graph on OpenVINO's CPU plugin: perf_analyzer and the SDK at each load, the
    vectors of both exports against fp32, and the int8 export at batch 64."""
    ov_pa = _service_rows(b, PERF_ANALYZER.format("gRPC") + ", OpenVINO",
                          partial(b.pa["grpc"].measure, OPENVINO, b.data))
    with Encoder(b.server.grpc_url, model=OPENVINO) as ov_sdk, \
            Encoder(b.server.grpc_url, model=OPENVINO_INT8) as ov_int8_sdk:
        ov_sdk_rows = _service_rows(b, SDK.format("gRPC") + ", OpenVINO",
                                    lambda batch, clients: b.measure(_sdk_call(ov_sdk, b.texts[:batch]), clients))
        for prefix, encoder in [("openvino", ov_sdk), ("openvino_int8", ov_int8_sdk)]:
            _record_cosines(b.results, prefix, fp32_vectors, encoder.encode(corpus))
    ov_int8 = b.add("headline", PERF_ANALYZER.format("gRPC") + ", OpenVINO int8", "batch 64", 64,
                    b.pa["grpc"].measure(OPENVINO_INT8, b.data, 64, 1), b.base[64])
    return ov_pa, ov_sdk_rows, ov_int8


# -- sweeps -------------------------------------------------------------------------
# Sweep points the headline already measured (same model, data, batch and clients) reuse its figures.


def _sequence_lengths(b: _Bench) -> None:
    """perf_analyzer at batch `seq_batch` against sentence-transformers, at each sentence length."""
    for length in b.settings.seq_lengths:
        batch_texts = workload.sentences(b.tokenizer, 64, length)
        base = b.add("seq_len", b.st.name, f"{length} tokens", length,
                     b.measure(b.st.encoder(batch_texts[: b.settings.seq_batch])))
        seq_data = workload.write_input_data(batch_texts, b.scratch / f"seq{length}.json")
        b.add("seq_len", PERF_ANALYZER.format("gRPC"), f"{length} tokens", length,
              b.pa["grpc"].measure(DEFAULT_MODEL_NAME, seq_data, b.settings.seq_batch, 1), base)


def _concurrency(b: _Bench, pa: _RowsByLoad) -> None:
    """Concurrent single-sentence clients, which only dynamic batching turns into batches."""
    for clients in b.settings.concurrencies:
        measured = {1: pa[1], 16: pa[16]}.get(clients)
        b.add("clients", PERF_ANALYZER.format("gRPC"), f"{clients} clients x batch 1", clients,
              measured.result if measured else b.pa["grpc"].measure(DEFAULT_MODEL_NAME, b.data, 1, clients),
              b.base[64])


def _layer_depths(b: _Bench, pa64: Row) -> None:
    """Pooling at each layer depth: the upper layers cut from the graph."""
    for layer in b.settings.layer_depths:
        b.add("layer", PERF_ANALYZER.format("gRPC"), f"layer {layer}", layer, pa64.result if layer == -1 else
              b.pa["grpc"].measure(f"layer{layer}", b.data, 64, 1), b.base[64])


def _mixed_lengths(b: _Bench) -> None:
    """Mixed-length traffic with length groups and as one padded block: padded tokens computed per real token,
    from the encoder's token counters."""
    mixed_texts = workload.mixed(b.tokenizer, 256, b.settings.mixed_lengths)
    mixed_data = workload.write_input_data(mixed_texts, b.scratch / "mixed.json")
    for mixed_model, label in [(DEFAULT_MODEL_NAME, "length groups"), (UNGROUPED, "one padded block")]:
        before = _tokens_metric(b.server.metrics_url, f"{mixed_model}_encoder")
        b.add("mixed", PERF_ANALYZER.format("gRPC") + f", {label}", "16 clients x batch 1, mixed", 16,
              b.pa["grpc"].measure(mixed_model, mixed_data, 1, 16))
        after = _tokens_metric(b.server.metrics_url, f"{mixed_model}_encoder")
        real = after["real"] - before["real"]
        ratio = (after["computed"] - before["computed"]) / real if real else float("nan")
        b.results.facts["padding_ratio" if mixed_model == DEFAULT_MODEL_NAME else "padding_ratio_ungrouped"] = ratio


def _rerank(b: _Bench, door_url: str) -> None:
    """One query against `rerank_documents` documents (issue 22): `CrossEncoder.predict` in process, then
    `Encoder.rerank` and the door's /v1/rerank, then `CrossEncoder.predict` again (the faster kept, as for the
    headline baselines). Each system's scores are first checked against CrossEncoder's; that call is its warm-up.
    Rates count (query, document) pairs."""
    docs = rerank.documents(b.settings.rerank_documents)
    setting, n = f"1 query x {len(docs):,} documents", len(docs)
    f, measure = b.results.facts, partial(timed, seconds=b.settings.seconds, warmup=0)
    want = b.cross_encoder.scores(rerank.QUERY, docs)
    base = b.add("rerank", CROSS_ENCODER, setting, n, measure(b.cross_encoder.reranker(rerank.QUERY, docs)))
    with Encoder(b.server.grpc_url, model=RERANK_MODEL) as encoder:
        info = encoder.info()
        f.update(rerank_runtime=info.runtime, rerank_precision=info.precision)
        f["rerank_sdk_max_score_diff"] = float(np.abs(rerank.sdk_scores(encoder, rerank.QUERY, docs) - want).max())
        sdk = b.add("rerank", RERANK_SDK, setting, n, measure(rerank.sdk_reranker(encoder, rerank.QUERY, docs)), base)
    door = DoorReranker(door_url)
    f["rerank_door_max_score_diff"] = float(np.abs(door.scores(rerank.QUERY, docs) - want).max())
    door_row = b.add("rerank", RERANK_DOOR, setting, n, measure(door.reranker(rerank.QUERY, docs)), base)
    b.results.keep_faster(base, measure(b.cross_encoder.reranker(rerank.QUERY, docs)))
    f.update(rerank_sdk_vs_cross_encoder=sdk.ratio, rerank_door_vs_cross_encoder=door_row.ratio)


def _response_cache(b: _Bench) -> None:
    """The repeated-query load (`perf/cache.py`) against the default model without a cache (the run's server) and
    with one (a second server of the default model alone): rates, the hits and misses the ensemble counted, and
    each pool query's cached answer against the computed one."""
    s, f = b.settings, b.results.facts
    pool = b.texts[: s.cache_queries]
    setting = f"{s.cache_clients} clients x 1 of {len(pool)} queries"
    with Encoder(b.server.grpc_url, model=DEFAULT_MODEL_NAME) as encoder:
        off = b.add("cache", cache.NO_CACHE, setting, s.cache_clients,
                    b.measure(cache.RepeatedQueries(pool).call(encoder), s.cache_clients), b.base[64])
        computed = np.concatenate([encoder.encode([query]) for query in pool])
    repo = b.scratch / "cached"
    copy_as(b.repo, repo, DEFAULT_MODEL_NAME, unchanged)
    load = cache.RepeatedQueries(pool)
    # No supervisor: its probes would be lookups too, and the status must count the load's requests alone.
    with TritonServer(ServerConfig.loopback(repo, cache_size=s.cache_size, heal=False)) as server, \
            Encoder(server.grpc_url, model=DEFAULT_MODEL_NAME) as encoder:
        on = b.add("cache", f"{cache.CACHED} {cache.size_text(s.cache_size)}", setting, s.cache_clients,
                   b.measure(load.call(encoder), s.cache_clients), b.base[64])
        counted = encoder.server_status().model(DEFAULT_MODEL_NAME)
        answered = np.concatenate([encoder.encode([query]) for query in pool])  # hits now: after the status read
    f.update(cache_speedup=on.result.sentences_per_s / off.result.sentences_per_s, cache_hits=counted.cache_hits,
             cache_misses=counted.cache_misses, cache_hit_ratio=counted.cache_hit_ratio, cache_requests=load.requests,
             cache_distinct_queries=load.distinct, cache_answers_max_diff=float(np.abs(answered - computed).max()))


def _compact_recall(b: _Bench) -> None:
    """recall@10 of int8 and binary vectors against float32 (`perf/recall.py`) on the varied corpus encoded by the
    served default model, int8 with the ranges the model's export recorded."""
    s = b.settings
    docs, queries = recall.split(s.recall_corpus, s.recall_queries)
    with Encoder(b.server.grpc_url, model=DEFAULT_MODEL_NAME) as encoder, warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # long sentences are cut to the model's length
        info = encoder.info()
        if not info.quantization_ranges:
            raise ConfigError(f"model {info.name!r} in {b.repo} records no int8 ranges (exported before they were); "
                              "delete it there, or bench a fresh repository, so that the bench exports it again")
        doc_vectors, query_vectors = encoder.encode(docs), encoder.encode(queries)
    b.results.facts["recall"] = [dataclasses.asdict(found) for found in
                                 recall.searches(doc_vectors, query_vectors, info.quantization_ranges)]


# -- the facts the targets are judged on ------------------------------------------


def _closing_facts(b: _Bench, in_process: _InProcessRows, served: _ServedRows) -> None:
    """The baselines measured again (the faster kept), and the ratios and latencies the targets are judged on."""
    results, st64, st1 = b.results, b.base[64], b.base[1]
    results.facts["unstable"] = [point for analyzer in b.pa.values() for point in analyzer.unstable]
    results.keep_faster(st64, b.measure(b.st.encoder(b.texts[:64])))
    results.keep_faster(st1, b.measure(b.st.encoder(b.single)))
    pa, http, sdk = served.pa["gRPC"], served.pa["HTTP"], served.sdk["gRPC"]
    results.facts.update(
        st_measured_twice=True,
        batch64_vs_st=pa[64].ratio, sdk_batch64_vs_st=sdk[64].ratio, concurrent16_vs_batch64=(
            pa[16].result.sentences_per_s / pa[64].result.sentences_per_s),
        single_p50_ms=pa[1].result.p50_ms, sdk_single_p50_ms=sdk[1].result.p50_ms, st_single_p50_ms=st1.result.p50_ms,
        int8_vs_st=served.int8.ratio,
        http_concurrent16_vs_batch64=http[16].result.sentences_per_s / http[64].result.sentences_per_s,
        sdk_concurrent16_vs_batch64=sdk[16].result.sentences_per_s / sdk[64].result.sentences_per_s,
        onnxruntime_vs_in_process=pa[64].result.sentences_per_s / in_process.ort64.result.sentences_per_s,
        **_tail_facts("grpc", sdk[1].result), **_tail_facts("http", served.sdk["HTTP"][1].result),
    )
    if report.cpu_class(results.machine) == report.BF16_UNITS:  # a target there, and quick to measure again
        results.keep_faster(in_process.st_bf16_64, b.measure(in_process.st_bf16.encoder(b.texts[:64])))
    _cpu_runtime_facts(results, {"ONNX Runtime": (pa, sdk), "OpenVINO": (served.openvino_pa, served.openvino_sdk)},
                       {"ONNX Runtime": (served.int8, "int8"), "OpenVINO": (served.openvino_int8, "openvino_int8")},
                       in_process.st_bf16_64, in_process.ov64)


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
                                 timed(_encode_batches(tokenizer, texts), settings.seconds, warmup=settings.warmup))
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


def _timer(seconds: float, warmup: int) -> Callable[..., Measurement]:
    return lambda call, clients=1: timed(call, seconds, clients, warmup)


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
    results = load(args.from_results) if args.from_results else run(settings, args.out, args.repository)
    report.write(results, args.out, args.markdown)
    _log.info("benchmark done in %.0f s: %s, %s", time.monotonic() - started, args.out, args.markdown)
    return 0
