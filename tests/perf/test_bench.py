"""`python -m perf --quick` (run in this process): the whole harness runs, and every cell of its table says what
results.json holds.

Speed is not judged here: quick windows hold a request or two.
"""

from __future__ import annotations

import json
import logging
import re

from perf.bench import TOKENIZER_IN_PROCESS, TOKENIZER_SERVED, main
from perf.cache import CACHED, NO_CACHE, size_text
from perf.recall import CODES_SEARCH, FLOAT32_SEARCH, K, RESCORE_MULTIPLIER, RESCORED
from perf.report import (CACHE_TITLE, CPU_TARGETS_TITLE, FRONTDOOR_TITLE, GPU_TARGETS, HOST_PATH_GOALS, HOST_PATH_TITLE,
                         RECALL_TITLE, RERANK_GOAL, RERANK_TARGETS_TITLE, RERANK_TITLE, SWEEPS, TOKENIZER_TITLE,
                         cpu_class, verdict)
from perf.rerank import CROSS_ENCODER, RERANK_DOOR, RERANK_SDK
from perf.results import cpu_text

from .markdown import tables
from .rounding import agrees, ratio_agrees, ratio_interval

ST = "sentence-transformers (in-process)"
SYSTEMS = {ST, "ONNX Runtime (in-process, same graph)", "infinity-emb (server, torch)", "bertserve (perf_analyzer, gRPC)",
           "bertserve (perf_analyzer, HTTP)", "bertserve (Python SDK, gRPC)", "bertserve (Python SDK, HTTP)",
           "bertserve (perf_analyzer, gRPC), int8", "fastembed (in-process, ONNX Runtime)",
           "sentence-transformers (in-process, bf16 autocast)", "bertserve (perf_analyzer, gRPC), OpenVINO",
           "bertserve (Python SDK, gRPC), OpenVINO", "bertserve (perf_analyzer, gRPC), OpenVINO int8"}
# In-process OpenVINO: batch 64 under whichever hint was faster, batch 1 under the latency hint.
OPENVINO_IN_PROCESS = re.compile(r"OpenVINO \(in-process, same graph, (latency|throughput) hint, (f32|bf16)\)")


def _baseline(rows: list[dict], row: dict) -> dict:
    """The sentence-transformers row a row is compared with: same sweep and setting, else the headline batch 64.
    Rerank rows are compared with `CrossEncoder.predict`, the rest with `SentenceTransformer.encode`."""
    system = CROSS_ENCODER if row["sweep"] == "rerank" else ST
    for sweep, setting in [(row["sweep"], row["setting"]), ("headline", "batch 64")]:
        same = [r for r in rows if (r["system"], r["sweep"], r["setting"]) == (system, sweep, setting)]
        if same:
            return same[0]
    raise AssertionError(f"no baseline for {row}")


def test_quick_bench_table_states_what_it_measured(tmp_path, variants_repository, caplog):
    markdown = tmp_path / "BENCHMARKS.md"
    with caplog.at_level(logging.INFO):
        assert main(["--quick", "--out", str(tmp_path), "--markdown", str(markdown),
                     "--repository", str(variants_repository)]) == 0
    assert not [r for r in caplog.records if r.name == "bertserve.export"], "the bench exported models it was given"
    data = json.loads((tmp_path / "results.json").read_text())
    rows, facts = data["rows"], data["facts"]
    assert data["machine"]["isa"] and f"(ISA: {data['machine']['isa']}" in markdown.read_text()
    headline = {row["system"] for row in rows if row["sweep"] == "headline"}
    in_process_openvino = {system for system in headline if OPENVINO_IN_PROCESS.fullmatch(system)}
    assert headline - in_process_openvino == SYSTEMS and in_process_openvino
    assert {"seq_len", "batch", "clients", "layer", "mixed", "frontdoor", "tokenizer", "rerank", "cache"} <= {
        row["sweep"] for row in rows}
    assert all(row["sentences_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] for row in rows)
    # The tail where the loop kept every latency (in-process and SDK timing), never where perf_analyzer measured.
    assert all(row["p99_ms"] <= row["p999_ms"] <= row["max_ms"] for row in rows if row["p999_ms"] is not None)
    assert not [row for row in rows if "perf_analyzer" in row["system"] and row["max_ms"] is not None]
    for plot in ("headline", "seq_len", "batch", "clients", "layer"):
        assert (tmp_path / f"{plot}.png").stat().st_size > 1000

    # Each ratio is the row's throughput over its sentence-transformers baseline, measured in the same run. Rates
    # are rounded to 2 decimals, ratios to 3 (tests/perf/rounding.py): compared as the intervals they stand for.
    for row in rows:
        if row["ratio_to_sentence_transformers"] is not None:
            want = ratio_interval(row["sentences_per_s"], _baseline(rows, row)["sentences_per_s"], 2)
            assert agrees(row["ratio_to_sentence_transformers"], 3, want), (row, want)

    # Every row appears in the table with the figures results.json holds.
    text = markdown.read_text()
    headings = {"headline": "Against the alternatives", "mixed": "Mixed-length traffic", "frontdoor": FRONTDOOR_TITLE,
                "tokenizer": TOKENIZER_TITLE, "rerank": RERANK_TITLE, "cache": CACHE_TITLE,
                **{sweep: title for sweep, (title, _) in SWEEPS.items()}}
    cells = {(heading, r["system"], r["load"]): r for heading, table in tables(text).items() for r in table
             if "load" in r}
    for row in rows:
        cell = cells[headings[row["sweep"]], row["system"], row["setting"]]
        assert cell["sentences/s"] == f"{row['sentences_per_s']:,.1f}", row
        assert cell["p50 ms"] == f"{row['p50_ms']:.2f}" and cell["p99 ms"] == f"{row['p99_ms']:.2f}", row
        ratio = row["ratio_to_sentence_transformers"]
        assert cell["× sentence-transformers"] == (f"{ratio:.2f}×" if ratio is not None else
                                                   "baseline" if row["system"] in (ST, CROSS_ENCODER) else ""), row

    # The facts behind the targets come from those rows, and the verdicts follow from the facts.
    def row_of(system: str, setting: str) -> dict:
        return next(r for r in rows if r["sweep"] == "headline" and r["system"] == system and r["setting"] == setting)

    # A fact that is a row's own figure equals it once rounded as results.json rounds it; a ratio of two rows
    # is the ratio of some figures those rounded rates stand for.
    pa64 = row_of("bertserve (perf_analyzer, gRPC)", "batch 64")
    assert round(facts["batch64_vs_st"], 3) == pa64["ratio_to_sentence_transformers"]
    assert ratio_agrees(facts["concurrent16_vs_batch64"], row_of("bertserve (perf_analyzer, gRPC)",
                                                                 "16 clients x batch 1")["sentences_per_s"],
                        pa64["sentences_per_s"])
    assert round(facts["single_p50_ms"], 3) == row_of("bertserve (perf_analyzer, gRPC)", "batch 1")["p50_ms"]
    sdk = "bertserve (Python SDK, gRPC)"
    door = {(r["system"], r["setting"]): r for r in rows if r["sweep"] == "frontdoor"}
    base64_64 = door["OpenAI API (front door, base64)", "batch 64"]["sentences_per_s"]
    plain = "OpenAI API (front door, base64, plain HTTP client)"
    for fact, system, setting in [("frontdoor_batch64_vs_sdk", plain, "batch 64"),
                                  ("frontdoor_16_vs_sdk", plain, "16 clients x batch 1"),
                                  ("openai_batch64_vs_sdk", "OpenAI API (front door, base64)", "batch 64"),
                                  ("openai_16_vs_sdk", "OpenAI API (front door, base64)", "16 clients x batch 1")]:
        assert ratio_agrees(facts[fact], door[system, setting]["sentences_per_s"],
                            row_of(sdk, setting)["sentences_per_s"]), fact
    assert ratio_agrees(facts["float_vs_base64"], door["OpenAI API (front door, float)", "batch 64"]["sentences_per_s"],
                        base64_64)
    targets = {" ".join(r["target"].split(" ")[:2]): r for r in tables(text)["Targets"]}
    (door64,) = [r for r in tables(text)["Targets"] if r["target"].startswith("OpenAI front door at batch 64")]
    assert (door64["met"] == "yes") == (facts["frontdoor_batch64_vs_sdk"] >= 0.9)
    assert targets["batch-64 throughput"]["measured"].startswith(f"{facts['batch64_vs_st']:.2f}×")
    assert (targets["batch-64 throughput"]["met"] == "yes") == (facts["batch64_vs_st"] >= 1.2)
    assert targets["mixed-length traffic"]["measured"] == f"{facts['padding_ratio']:.3f}"
    assert 0.99 < facts["padding_ratio"] <= facts["padding_ratio_ungrouped"]

    # The CPU runtime targets: "service" is the export faster at batch 64, and its rows give the facts.
    service = {"ONNX Runtime": "bertserve (perf_analyzer, gRPC)", "OpenVINO": "bertserve (perf_analyzer, gRPC), OpenVINO"}
    # Rounding keeps order, so the faster export's rounded rate is at least the other's (equal only in a tie).
    faster = facts["service"]
    assert all(row_of(service[faster], "batch 64")["sentences_per_s"] >= row_of(other, "batch 64")["sentences_per_s"]
               for other in service.values())
    best = {setting: row_of(service[faster], setting) for setting in ("batch 64", "batch 1", "16 clients x batch 1")}
    assert round(facts["service_batch64_vs_st"], 3) == best["batch 64"]["ratio_to_sentence_transformers"]
    assert ratio_agrees(facts["service_concurrent16_vs_batch64"], best["16 clients x batch 1"]["sentences_per_s"],
                        best["batch 64"]["sentences_per_s"])
    assert round(facts["service_single_p50_ms"], 3) == best["batch 1"]["p50_ms"]
    (in_process,) = [r for r in rows if OPENVINO_IN_PROCESS.fullmatch(r["system"]) and r["setting"] == "batch 64"]
    assert facts["openvino_in_process"] == in_process["system"]
    assert ratio_agrees(facts["openvino_vs_in_process"], row_of(service["OpenVINO"], "batch 64")["sentences_per_s"],
                        in_process["sentences_per_s"])
    assert set(facts["openvino_in_process_batch64_by_hint"]) == {"latency", "throughput"}
    assert ratio_agrees(facts["service_vs_st_bf16"], best["batch 64"]["sentences_per_s"], row_of(
        "sentence-transformers (in-process, bf16 autocast)", "batch 64")["sentences_per_s"])
    prefix = {"ONNX Runtime": "int8", "OpenVINO": "openvino_int8"}[facts["int8_service"]]
    assert facts["int8_service_cosine_min"] == facts[f"{prefix}_cosine_min"] <= facts[f"{prefix}_cosine_mean"] <= 1.0001
    cpu_targets = {r["target"]: r for r in tables(text)[CPU_TARGETS_TITLE]}
    assert f"This CPU's class: **{cpu_class(data['machine'])}**" in text
    (first,) = [r for r in cpu_targets.values() if r["target"].startswith("service batch-64 throughput")
                and r["target"].endswith("fp32")]
    assert first["measured"].startswith(f"{facts['service_batch64_vs_st']:.2f}× ({faster} export")

    # Issue 20's host-path targets: each verdict from facts that are ratios of this run's rows.
    settings = data["settings"]
    for length in settings["tokenizer_lengths"]:
        tokenizer_rows = {r["system"]: r for r in rows if r["sweep"] == "tokenizer" and r["value"] == length}
        assert set(tokenizer_rows) == {TOKENIZER_IN_PROCESS, TOKENIZER_SERVED}
        assert ratio_agrees(facts[f"tokenizer{length}_vs_in_process"], tokenizer_rows[TOKENIZER_SERVED]["sentences_per_s"],
                            tokenizer_rows[TOKENIZER_IN_PROCESS]["sentences_per_s"])
    for protocol, label in (("grpc", "gRPC"), ("http", "HTTP")):
        one = row_of(f"bertserve (Python SDK, {label})", "batch 1")
        assert [round(facts[f"tail_{protocol}_{key}_ms"], 3) for key in ("p50", "p999", "max")] == [
            one["p50_ms"], one["p999_ms"], one["max_ms"]]
    pa_http = "bertserve (perf_analyzer, HTTP)"
    assert ratio_agrees(facts["http_concurrent16_vs_batch64"], row_of(pa_http, "16 clients x batch 1")["sentences_per_s"],
                        row_of(pa_http, "batch 64")["sentences_per_s"])
    assert ratio_agrees(facts["sdk_concurrent16_vs_batch64"], row_of(sdk, "16 clients x batch 1")["sentences_per_s"],
                        row_of(sdk, "batch 64")["sentences_per_s"])
    assert ratio_agrees(facts["onnxruntime_vs_in_process"], pa64["sentences_per_s"],
                        row_of("ONNX Runtime (in-process, same graph)", "batch 64")["sentences_per_s"])
    for load, setting in (("batch1", "batch 1"), ("batch64", "batch 64"), ("clients16", "16 clients x batch 1")):
        for prefix, ov, ort in (("openvino_vs_onnxruntime", service["OpenVINO"], service["ONNX Runtime"]),
                                ("openvino_vs_onnxruntime_sdk", f"{sdk}, OpenVINO", sdk)):
            assert ratio_agrees(facts[f"{prefix}_{load}"], row_of(ov, setting)["sentences_per_s"],
                                row_of(ort, setting)["sentences_per_s"]), (prefix, load)
    host = tables(text)[HOST_PATH_TITLE]
    goals = HOST_PATH_GOALS
    judged = [  # (fact or value, goal, lower is better) per row, in the table's order
        *((facts[f"tokenizer{length}_vs_in_process"], goals["tokenizer"], False) for length in settings["tokenizer_lengths"]),
        *((facts[f"tail_{p}_p999_ms"] / facts[f"tail_{p}_p50_ms"], goals["tail"], True) for p in ("grpc", "http")),
        *((facts[fact], goals["clients"], False) for fact in ("concurrent16_vs_batch64", "http_concurrent16_vs_batch64",
                                                              "sdk_concurrent16_vs_batch64")),
        (facts["frontdoor_16_vs_sdk"], goals["door"], False),
        (facts["openvino_vs_in_process"], goals["in_process"], False),
        (facts["onnxruntime_vs_in_process"], goals["in_process"], False),
        (min(facts[f"openvino_vs_onnxruntime_{load}"] for load in ("batch1", "batch64", "clients16")), goals["default"],
         False),
    ]
    assert len(host) == len(judged) + len(GPU_TARGETS)
    for row, (value, goal, lower) in zip(host, judged):
        assert row["measured"].startswith(f"{value:.2f}×") or row["measured"].startswith(f"lowest {value:.2f}×"), row
        assert row["met"] == verdict(value, goal, lower), row
    assert all(row["met"] == "not measured" and "no GPU" in row["measured"] for row in host[len(judged):])

    # Issue 22's rerank: the same documents through each system, ratios of this run's rows, and the service's
    # scores those of CrossEncoder.predict on the same model: within the 1e-4 in fp32, within the export's
    # own bound where this CPU's default encoder computes in bf16.
    reranked = {r["system"]: r for r in rows if r["sweep"] == "rerank"}
    n = settings["rerank_documents"]
    assert set(reranked) == {CROSS_ENCODER, RERANK_SDK, RERANK_DOOR}
    assert {(r["setting"], r["value"]) for r in reranked.values()} == {(f"1 query x {n:,} documents", n)}
    rerank_targets = tables(text)[RERANK_TARGETS_TITLE]
    assert len(rerank_targets) == 2
    from bertserve.export import Precision, default_encoder
    from bertserve.export.encoder import SCORE_TOLERANCE  # torch: not at module level

    assert (facts["rerank_runtime"], facts["rerank_precision"]) == tuple(c.value for c in default_encoder())
    score_bound = 1e-4 if facts["rerank_precision"] == "fp32" else SCORE_TOLERANCE[Precision.BF16]
    for target, (system, key) in zip(rerank_targets, ((RERANK_SDK, "sdk"), (RERANK_DOOR, "door"))):
        value = facts[f"rerank_{key}_vs_cross_encoder"]
        assert ratio_agrees(value, reranked[system]["sentences_per_s"], reranked[CROSS_ENCODER]["sentences_per_s"])
        assert 0 <= facts[f"rerank_{key}_max_score_diff"] < score_bound, key
        assert target["measured"].startswith(f"{value:.2f}×") and f"{RERANK_GOAL:g}×" in target["target"], target
        assert target["met"] == verdict(value, RERANK_GOAL, False), target
    # Like every figure, these say which CPU measured them.
    section = text.split(f"### {RERANK_TARGETS_TITLE}")[1].split("### ")[0]
    assert f"Machine: {cpu_text(data['machine'])} (ISA: {data['machine']['isa']}" in section
    assert f"({facts['rerank_runtime']}, precision {facts['rerank_precision']}: `default_encoder`)" in section

    # Issue 23's response cache: the same repeated-query load without and with it; the server counted one lookup
    # per request the load sent, a miss at least for each distinct query, and the cached answers are the computed.
    cached = {r["system"]: r for r in rows if r["sweep"] == "cache"}
    cache_on = f"{CACHED} {size_text(settings['cache_size'])}"
    assert set(cached) == {NO_CACHE, cache_on}
    assert {(r["setting"], r["value"]) for r in cached.values()} == {
        (f"{settings['cache_clients']} clients x 1 of {settings['cache_queries']} queries", settings["cache_clients"])}
    assert ratio_agrees(facts["cache_speedup"], cached[cache_on]["sentences_per_s"], cached[NO_CACHE]["sentences_per_s"])
    hits, misses, distinct = facts["cache_hits"], facts["cache_misses"], facts["cache_distinct_queries"]
    assert hits + misses == facts["cache_requests"] and 1 <= distinct <= settings["cache_queries"]
    assert distinct <= misses <= distinct * settings["cache_clients"] and hits >= 1
    # Two servers batch the same query with different neighbours: equal to float32 rounding, not bit for bit
    # (tests/server/test_cache.py holds a hit to the computed answer exactly).
    assert facts["cache_hit_ratio"] == hits / (hits + misses) and facts["cache_answers_max_diff"] < 1e-5
    assert (f"speed-up: {facts['cache_speedup']:.2f}× the sentences/s of the uncached server. Hit ratio "
            f"{facts['cache_hit_ratio']:.3f} ({hits:,} hits, {misses:,} misses") in text

    # Issue 23's compact vectors: recall@10 of each search against float32's top 10, in a table of the facts.
    dim = 384
    searched = [(r["dtype"], r["search"], r["bytes_per_vector"]) for r in facts["recall"]]
    rescored = {dtype: RESCORED.format(candidates=RESCORE_MULTIPLIER * K, search=CODES_SEARCH[dtype])
                for dtype in ("int8", "binary")}
    assert searched == [("float32", FLOAT32_SEARCH, 4 * dim), ("int8", CODES_SEARCH["int8"], dim),
                        ("int8", rescored["int8"], dim), ("binary", CODES_SEARCH["binary"], dim // 8),
                        ("binary", rescored["binary"], dim // 8)]
    assert facts["recall"][0]["recall"] == 1.0 and all(0 < r["recall"] <= 1 for r in facts["recall"])
    cells = [(r["output_dtype"], r["search"], r["bytes per vector"], r[f"recall@{K}"]) for r in tables(text)[RECALL_TITLE]]
    assert cells == [(r["dtype"], r["search"], f"{r['bytes_per_vector']:,}", f"{r['recall']:.3f}")
                     for r in facts["recall"]]
    section = text.split(f"### {RECALL_TITLE}")[1].split("### ")[0]
    assert f"Machine: {cpu_text(data['machine'])}" in section and f"first {settings['recall_corpus']:,} distinct" in section

    # The table is a pure function of results.json: re-rendering it measures nothing and changes nothing.
    again = tmp_path / "again" / "BENCHMARKS.md"  # same layout: plots beside the table
    assert main(["--from-results", str(tmp_path / "results.json"), "--out", str(again.parent),
                 "--markdown", str(again)]) == 0
    assert again.read_text() == text
