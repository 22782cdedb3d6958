"""Write a benchmark run as JSON, CSV, PNG plots and the BENCHMARKS.md table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from bertserve.export.config import BF16_UNITS as BF16_CPU_FLAGS

from . import gpu_report, recall
from .results import ISA_FLAGS, Results, Row, cpu_text, load, save

SWEEPS = {
    "seq_len": ("Sequence length", "tokens per sentence"),
    "batch": ("Client batch size", "sentences per call"),
    "clients": ("Concurrent single-sentence clients", "clients"),
    "layer": ("Pooling layer depth (upper layers cut from the graph)", "layer"),
}
FRONTDOOR_TITLE = "OpenAI front door (HTTP: the openai package, and a plain client for the door's own cost)"
CPU_TARGETS_TITLE = "CPU runtime targets (OpenVINO, bf16, int8)"
HOST_PATH_TITLE = "Host-path targets (issue 20: the tokenizer, stalls, many small clients, the CPU default)"
TOKENIZER_TITLE = "The served tokenizer model alone against `tokenizers` in process"
RERANK_TARGETS_TITLE = "Rerank targets (issue 22: one query against many documents)"
RERANK_TITLE = "Rerank: one query against many documents (pairs/s)"
CACHE_TITLE = "Response cache: a repeated-query load (issue 23)"
RECALL_TITLE = "Compact vectors: recall@10 against float32 (issue 23)"
# Issue 22's goal: rerank through the service (SDK, and the door's /v1/rerank) / CrossEncoder.predict in process.
RERANK_GOAL = 1.2
# Issue 20's goals: served tokenizer / in-process, p99.9 / p50 of one client, 16 clients / batch 64, the door / the
# SDK, the service / in-process on the same runtime and graph, OpenVINO auto / ONNX Runtime fp32 (the CPU default).
HOST_PATH_GOALS = {"tokenizer": 0.7, "tail": 3.0, "clients": 0.9, "door": 0.95, "in_process": 0.95, "default": 1.0}
# Issue 20's GPU targets (perf/gpu.sh on one H200), listed as not measured: the CPU bench runs none of them.
GPU_TARGETS = ("BERT-base, 20 tokens ≥ 120,000 sentences/s", "BERT-base, 128 tokens ≥ 25,000 sentences/s",
               "MiniLM, 20 tokens ≥ 250,000 sentences/s", "MiniLM, 128 tokens ≥ 60,000 sentences/s (GPU ≥ 90% busy)")
# CPU classes of the CPU runtime targets: a CPU with either flag computes bf16 in hardware.
BF16_UNITS, AVX2_ONLY = "bf16 units", "AVX2 only"
BF16_FLAGS = BF16_CPU_FLAGS  # the flags the export default also goes by
# The int8 cosine bar, to fp32 on the mixed corpus: the mean, and every sentence.
INT8_COSINE_MEAN, INT8_COSINE_MIN = 0.99, 0.95
# Per class: the service at batch 64 against sentence-transformers fp32 and under bf16 autocast (None: no
# target), and the int8 export against sentence-transformers fp32.
CLASS_GOALS = {BF16_UNITS: {"st": 2.5, "st_bf16": 1.3, "int8": 3.5}, AVX2_ONLY: {"st": 1.3, "st_bf16": None, "int8": 2.0}}


def cpu_class(machine: dict[str, str]) -> str:
    """The CPU's class for the CPU runtime targets, from the ISA flags recorded with the run."""
    return BF16_UNITS if set(machine.get("isa", "").split()) & set(BF16_FLAGS) else AVX2_ONLY


def write(results: Results, out: Path, markdown: Path, plots: bool = True) -> None:
    """Write a run's results.json and .csv, its plots (unless `plots` is false: the tables alone, in a second
    rather than several), and the BENCHMARKS.md they make."""
    save(results, out)
    results = load(out / "results.json")  # the table and plots show exactly what the files hold
    markdown.write_text(_markdown(results, _plots(results, out) if plots else {}, markdown.parent))


def _plots(results: Results, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for sweep, (title, xlabel) in SWEEPS.items():
        rows = [r for r in results.rows if r.sweep == sweep]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for system in dict.fromkeys(r.system for r in rows):
            mine = [r for r in rows if r.system == system]
            ax.plot([r.value for r in mine], [r.result.sentences_per_s for r in mine], marker="o", label=system)
        if sweep in ("seq_len", "batch", "clients"):
            ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("sentences / s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths[sweep] = out / f"{sweep}.png"
        fig.savefig(paths[sweep], dpi=110)
        plt.close(fig)
    headline = [r for r in results.rows if r.sweep == "headline" and r.setting == "batch 64"]
    fig, ax = plt.subplots(figsize=(7, max(4.0, 0.3 * len(headline))))
    ax.barh([r.system for r in headline], [r.result.sentences_per_s for r in headline])
    ax.set_xlabel("sentences / s, batches of 64")
    ax.set_title("all-MiniLM-L6-v2, ~16-token sentences")
    fig.tight_layout()
    paths["headline"] = out / "headline.png"
    fig.savefig(paths["headline"], dpi=110)
    plt.close(fig)
    return paths


def _table(rows: list[Row]) -> list[str]:
    lines = ["| system | load | sentences/s | p50 ms | p99 ms | × sentence-transformers |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "baseline" if "sentence-transformers" in r.system else ""
        lines.append(f"| {r.system} | {r.setting} | {r.result.sentences_per_s:,.1f} | {r.result.p50_ms:.2f} | "
                     f"{r.result.p99_ms:.2f} | {ratio} |")
    return lines


def _targets(results: Results) -> list[str]:
    """Each target with its measurement; a miss says by how much (higher is better unless noted)."""
    f = results.facts
    checks = [  # target, measured text, value, goal, lower is better
        ("batch-64 throughput ≥ 1.2× sentence-transformers", f"{f['batch64_vs_st']:.2f}× (SDK end to end: "
         f"{f['sdk_batch64_vs_st']:.2f}×)", f["batch64_vs_st"], 1.2, False),
        ("16 concurrent single-sentence clients ≥ 0.8× batch-64 throughput", f"{f['concurrent16_vs_batch64']:.2f}×",
         f["concurrent16_vs_batch64"], 0.8, False),
        ("single-sentence p50 ≤ sentence-transformers' single-sentence p50",
         f"{f['single_p50_ms']:.2f} ms (SDK {f['sdk_single_p50_ms']:.2f} ms) vs {f['st_single_p50_ms']:.2f} ms",
         f["single_p50_ms"], f["st_single_p50_ms"], True),
        ("mixed-length traffic ≤ 1.25 computed tokens per real token", f"{f['padding_ratio']:.3f}",
         f["padding_ratio"], 1.25, True),
        ("int8 ≥ 2× sentence-transformers fp32", f"{f['int8_vs_st']:.2f}×", f["int8_vs_st"], 2.0, False),
        ("int8 cosine ≥ 0.99 to fp32 (mean over 200 mixed sentences)",
         f"{f['int8_cosine_mean']:.4f} (min {f['int8_cosine_min']:.4f})", f["int8_cosine_mean"], 0.99, False),
        ("OpenAI front door at batch 64 ≥ 0.9× the SDK over gRPC (overhead ≤ 10%)",
         f"{f['frontdoor_batch64_vs_sdk']:.2f}× (through the openai package: {f['openai_batch64_vs_sdk']:.2f}×)",
         f["frontdoor_batch64_vs_sdk"], 0.9, False),
        ("OpenAI front door, 16 concurrent single-sentence clients ≥ 0.9× the SDK's",
         f"{f['frontdoor_16_vs_sdk']:.2f}× (through the openai package: {f['openai_16_vs_sdk']:.2f}×)",
         f["frontdoor_16_vs_sdk"], 0.9, False),
    ]
    return _verdicts(checks) + ["", "Levers tried for the misses, with their measured effect: `perf/NOTES.md`."]


def _verdicts(checks: list[tuple[str, str, Optional[float], float, bool]]) -> list[str]:
    """A targets table: (target, measured text, value, goal, lower is better) per row; a miss says by how much.
    A value of None is a target this run did not measure; its measured text says why."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    for target, measured, value, goal, lower in checks:
        lines.append(f"| {target} | {measured} | {verdict(value, goal, lower)} |")
    return lines


def verdict(value: Optional[float], goal: float, lower: bool) -> str:
    """Met or missed, and by how much; a miss too small to show as a whole percent never reads "missed by 0%"."""
    if value is None:
        return "not measured"
    if (value <= goal) if lower else (value >= goal):
        return "yes"
    miss = abs(value / goal - 1)
    return f"**no**: missed by {miss:.0%}" if round(miss * 100) >= 1 else "**no**: missed by <1%"


def _host_path_targets(results: Results) -> list[str]:
    """Issue 20's targets, each from figures of this run; GPU targets are measured by perf/gpu.sh, not here."""
    f, g = results.facts, HOST_PATH_GOALS
    slowest_default = min(f[f"openvino_vs_onnxruntime_{load}"] for load, _ in _LOADS)
    checks: list[tuple[str, str, Optional[float], float, bool]] = [
        (f"served tokenizer alone ≥ {g['tokenizer']}× in-process `tokenizers` encode_batch, batch 64, {length} tokens",
         f"{f[f'tokenizer{length}_vs_in_process']:.2f}×", f[f"tokenizer{length}_vs_in_process"], g["tokenizer"], False)
        for length in results.settings.tokenizer_lengths]
    for protocol, label in (("grpc", "gRPC"), ("http", "HTTP")):
        p50, p999, top = (f[f"tail_{protocol}_{key}_ms"] for key in ("p50", "p999", "max"))
        checks.append((f"1 client × 1 sentence for {results.settings.tail_seconds:g} s, {label} (SDK): p99.9 ≤ "
                       f"{g['tail']:g}× p50", f"{p999 / p50:.2f}× (p50 {p50:.2f} ms, p99.9 {p999:.2f} ms, max "
                       f"{top:.2f} ms)", p999 / p50, g["tail"], True))
    for fact, how in (("concurrent16_vs_batch64", "perf_analyzer, gRPC"), ("http_concurrent16_vs_batch64",
                      "perf_analyzer, HTTP"), ("sdk_concurrent16_vs_batch64", "Python SDK, gRPC")):
        checks.append((f"16 clients × 1 sentence ≥ {g['clients']}× batch-64 throughput ({how})", f"{f[fact]:.2f}×",
                       f[fact], g["clients"], False))
    checks += [
        (f"OpenAI front door, 16 single-sentence clients ≥ {g['door']}× the SDK's",
         f"{f['frontdoor_16_vs_sdk']:.2f}× (through the openai package: {f['openai_16_vs_sdk']:.2f}×)",
         f["frontdoor_16_vs_sdk"], g["door"], False),
        (f"service at batch 64 ≥ {g['in_process']}× in-process, same runtime and graph: OpenVINO",
         f"{f['openvino_vs_in_process']:.2f}× (SDK end to end: {f['openvino_sdk_vs_in_process']:.2f}×; against "
         f"{f['openvino_in_process']})", f["openvino_vs_in_process"], g["in_process"], False),
        (f"service at batch 64 ≥ {g['in_process']}× in-process, same runtime and graph: ONNX Runtime",
         f"{f['onnxruntime_vs_in_process']:.2f}×", f["onnxruntime_vs_in_process"], g["in_process"], False),
        (f"CPU default: OpenVINO (precision auto) ≥ {g['default']:g}× ONNX Runtime fp32 at batch 1, batch 64 and 16 "
         "clients × 1 sentence", f"lowest {slowest_default:.2f}×: "
         + ", ".join(f"{label} {f[f'openvino_vs_onnxruntime_{load}']:.2f}× (SDK "
                     f"{f[f'openvino_vs_onnxruntime_sdk_{load}']:.2f}×)" for load, label in _LOADS),
         slowest_default, g["default"], False),
        *((f"GPU (one H200): {target}", "not measured: no GPU in this run (`perf/gpu.sh`)", None, 0.0, False)
          for target in GPU_TARGETS),
    ]
    return [
        f"Ratios of figures measured in this run. Tokenizer rates: \"{TOKENIZER_TITLE}\"; the tail from the Python "
        "SDK's own loop (every latency kept); throughput from perf_analyzer over gRPC unless marked. What each hop "
        "costs a one-sentence request: `python -m perf.breakdown REPOSITORY MODEL --hops`.",
        "",
        *_verdicts(checks),
        "",
        "Why a target is missed, and what was tried: `perf/NOTES.md`.",
    ]


def _rerank_targets(results: Results) -> list[str]:
    """Issue 22's rerank target, through the SDK and through the door, from the rerank rows of this run."""
    f, m = results.facts, results.machine
    (base,) = [r for r in results.rows if r.sweep == "rerank" and r.ratio is None]
    checks: list[tuple[str, str, Optional[float], float, bool]] = [
        (f"rerank {base.setting} through {how} ≥ {RERANK_GOAL:g}× in-process `CrossEncoder.predict`",
         f"{f[fact]:.2f}× (largest score difference to CrossEncoder: {f[diff]:.1e})", f[fact], RERANK_GOAL, False)
        for how, fact, diff in (("the Python SDK (gRPC)", "rerank_sdk_vs_cross_encoder", "rerank_sdk_max_score_diff"),
                                ("the OpenAI front door's /v1/rerank", "rerank_door_vs_cross_encoder",
                                 "rerank_door_max_score_diff"))]
    return [
        f"Machine: {cpu_text(m)}{_isa(m)}. The model: all-MiniLM-L6-v2's encoder and pooler under a seeded random "
        "one-label head (BertForSequenceClassification, the architecture of cross-encoder/ms-marco-MiniLM-L6-v2), "
        f"exported as `bertserve export` exports it on this CPU ({f['rerank_runtime']}, precision "
        f"{f['rerank_precision']}: `default_encoder`); pairs cut at 512 tokens as CrossEncoder cuts them. The documents: "
        "the varied corpus of `export/corpus.py` (1 to 400 words, non-ASCII, emoji), one query. `CrossEncoder.predict` "
        "runs at its default batch size (32, pairs sorted by length first) and is measured before and after the "
        "service (the faster kept); the SDK "
        "and the door send one `rerank` call or request per ranking, which the service splits into batches. Rates "
        f"count (query, document) pairs: \"{RERANK_TITLE}\".",
        "",
        *_verdicts(checks),
    ]


def _cache(results: Results, rows: list[Row]) -> list[str]:
    """The repeated-query load without and with the response cache, and what the server counted."""
    f, s = results.facts, results.settings
    return [
        f"{s.cache_clients} client threads, each sending one query per request through the Python SDK (gRPC), the "
        f"query drawn uniformly at random (seeded) from a pool of {s.cache_queries} distinct {s.tokens}-token "
        "sentences: each asked many times, as RAG pipelines ask again. The default model, served without a cache "
        "(the run's server) and with one (a second server of the default model alone, `ServerConfig.cache_size`); "
        "warm-up requests included in the counts.",
        "",
        *_table(rows),
        "",
        f"The cache's speed-up: {f['cache_speedup']:.2f}× the sentences/s of the uncached server. Hit ratio "
        f"{f['cache_hit_ratio']:.3f} ({f['cache_hits']:,} hits, {f['cache_misses']:,} misses of the ensemble, from "
        f"`Encoder.server_status()`, for the {f['cache_requests']:,} requests sent, {f['cache_distinct_queries']} "
        "distinct queries among them). Largest difference between a cached answer and the uncached server's: "
        f"{f['cache_answers_max_diff']:.1e} (float32 rounding: the two servers batched each query with different "
        "neighbours).",
    ]


def _recall(results: Results) -> list[str]:
    """recall@10 of each compact dtype and search against float32, with the vectors' size."""
    s, m = results.settings, results.machine
    lines = [
        f"Machine: {cpu_text(m)}{_isa(m)}. The corpus: the first {s.recall_corpus:,} distinct sentences of the varied "
        f"corpus (`export/corpus.py`), encoded by the served default model; the queries: the next "
        f"{s.recall_queries:,} distinct sentences, held out. The truth: each query's float32 top {recall.K} over the "
        "corpus (cosine). int8 codes from the ranges the export recorded (`ModelInfo.quantization_ranges`, "
        "calibrated on the corpus's first 240 sentences) through `bertserve.quantize.quantize`; the searches as "
        "sentence-transformers' `semantic_search_usearch` runs them: int8 by the inner product of query and document "
        f"codes, binary by Hamming distance; rescoring ranks the top {recall.RESCORE_MULTIPLIER} × {recall.K} "
        "candidates by the float32 query against the documents' dequantized codes or unpacked bits.",
        "",
        f"| output_dtype | search | bytes per vector | recall@{recall.K} |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {r['dtype']} | {r['search']} | {r['bytes_per_vector']:,} | {r['recall']:.3f} |"
              for r in results.facts["recall"]]
    return lines


# The loads the CPU default is judged at: (facts key, label).
_LOADS = (("batch1", "batch 1"), ("batch64", "batch 64"), ("clients16", "16 clients"))


def _cpu_targets(results: Results) -> list[str]:
    """The CPU runtime targets of this CPU's class; "service" is the export fastest at batch 64 in the run."""
    f, m = results.facts, results.machine
    klass = cpu_class(m)
    goals = CLASS_GOALS[klass]
    service, int8 = f"{f['service']} export", f"{f['int8_service']} int8 export"
    checks = [
        (f"service batch-64 throughput ≥ {goals['st']}× sentence-transformers fp32",
         f"{f['service_batch64_vs_st']:.2f}× ({service}; SDK end to end: {f['service_sdk_batch64_vs_st']:.2f}×)",
         f["service_batch64_vs_st"], goals["st"], False),
        *([(f"service batch-64 throughput ≥ {goals['st_bf16']}× sentence-transformers under bf16 autocast",
            f"{f['service_vs_st_bf16']:.2f}× ({service})", f["service_vs_st_bf16"], goals["st_bf16"], False)]
          if goals["st_bf16"] else []),
        (f"int8 batch-64 throughput ≥ {goals['int8']}× sentence-transformers fp32",
         f"{f['int8_service_vs_st']:.2f}× ({int8})", f["int8_service_vs_st"], goals["int8"], False),
        (f"int8 cosine to fp32 ≥ {INT8_COSINE_MEAN}, mean over 200 mixed sentences",
         f"{f['int8_service_cosine_mean']:.4f} ({int8})", f["int8_service_cosine_mean"], INT8_COSINE_MEAN, False),
        (f"int8 cosine to fp32 ≥ {INT8_COSINE_MIN} for each of those sentences",
         f"{f['int8_service_cosine_min']:.4f} (lowest; {int8})", f["int8_service_cosine_min"], INT8_COSINE_MIN, False),
        ("OpenVINO export at batch 64 ≥ 0.85× in-process OpenVINO on the same graph",
         f"{f['openvino_vs_in_process']:.2f}× (SDK end to end: {f['openvino_sdk_vs_in_process']:.2f}×; against "
         f"{f['openvino_in_process']})", f["openvino_vs_in_process"], 0.85, False),
        ("service: 16 concurrent single-sentence clients ≥ 0.8× its batch-64 throughput",
         f"{f['service_concurrent16_vs_batch64']:.2f}× ({service})", f["service_concurrent16_vs_batch64"], 0.8, False),
        ("service single-sentence p50 ≤ sentence-transformers' single-sentence p50",
         f"{f['service_single_p50_ms']:.2f} ms (SDK {f['service_sdk_single_p50_ms']:.2f} ms) vs "
         f"{f['st_single_p50_ms']:.2f} ms ({service})", f["service_single_p50_ms"], f["st_single_p50_ms"], True),
    ]
    has = set(m.get("isa", "").split())
    units = ", ".join(flag for flag in BF16_FLAGS if flag in has)
    why = (f"it has {units}" if klass == BF16_UNITS else
           f"no {' or '.join(BF16_FLAGS)}: bf16 is emulated there, so sentence-transformers under bf16 autocast "
           f"runs at {f['st_bf16_vs_st']:.2f}× its fp32 speed and sets no target")
    return [
        f"This CPU's class: **{klass}** ({why}). \"Service\" is the bertserve configuration (ONNX Runtime or "
        "OpenVINO export) with the higher batch-64 throughput in this run; \"int8\" the faster int8 export that "
        "meets the cosine bar (the faster of the two if neither does). Throughput and p50 from perf_analyzer over "
        "gRPC, SDK figures beside them.",
        "",
        *_verdicts(checks),
        "",
        f"The OpenVINO export's own vectors (precision auto) against fp32: cosine mean "
        f"{f['openvino_cosine_mean']:.5f}, lowest {f['openvino_cosine_min']:.5f}; the ONNX Runtime int8 export: "
        f"{f['int8_cosine_mean']:.4f} and {f['int8_cosine_min']:.4f}; the OpenVINO int8 export: "
        f"{f['openvino_int8_cosine_mean']:.4f} and {f['openvino_int8_cosine_min']:.4f}.",
        "Why a target is missed, and what was tried: `perf/NOTES.md`, \"CPU runtimes: OpenVINO, bf16, int8\".",
    ]


def _isa(machine: dict[str, str]) -> str:
    """The recorded ISA flags, those the CPU has and those it lacks."""
    if "isa" not in machine:
        return ""
    has = machine["isa"].split()
    lacks = [flag for flag in ISA_FLAGS if flag not in has]
    if not has:
        return f" (ISA: none of {' '.join(ISA_FLAGS)})"
    return f" (ISA: {' '.join(has)}" + (f"; lacks {' '.join(lacks)})" if lacks else ")")


def _markdown(results: Results, plots: dict[str, Path], base: Path) -> str:
    m, s = results.machine, results.settings
    quick = " (quick run: harness check only, not a measurement)" if s.seconds < 1 else ""
    lines = [
        "# Benchmarks",
        "",
        "Regenerated by `make bench`; every ratio compares systems measured in the same run on the same",
        "machine, model (all-MiniLM-L6-v2, fp32 unless marked) and sentences. Raw numbers:",
        "`perf/results/results.json` and `.csv`. How each lever was chosen: `perf/NOTES.md`.",
        "",
        f"## CPU{quick}",
        "",
        f"Machine: {cpu_text(m)}{_isa(m)}; Python {m['python']}; Triton {m['triton']}; "
        f"ONNX Runtime {m['onnxruntime']}; "
        + "".join(f"{label} {m[key]}; " for label, key in [("OpenVINO", "openvino"), ("fastembed", "fastembed")]
                  if key in m)
        + f"torch {m['torch']}; sentence-transformers {m['sentence-transformers']}; {m['date']}.",
        f"Client and server on the same machine. Sentences of exactly {s.tokens} tokens unless a sweep says "
        f"otherwise; {s.seconds:g} s per in-process or SDK measurement, perf_analyzer windows of {s.window_ms} ms.",
        "The headline sentence-transformers baselines are measured at the start and again at the end of the",
        "run, and ratios use the faster of the two, so drift on this shared machine never flatters bertserve.",
        "Sweeps compare with a sentence-transformers measurement taken next to each of their rows.",
        *([f"perf_analyzer found no stable windows (even {2 * s.window_ms} ms long) for: "
           f"{'; '.join(results.facts['unstable'])}; those figures are its last windows, unchecked."]
          if results.facts.get("unstable") else []),
        "",
        "### Targets",
        "",
        *_targets(results),
        "",
        *([f"### {CPU_TARGETS_TITLE}", "", *_cpu_targets(results), ""] if "service" in results.facts else []),
        *([f"### {HOST_PATH_TITLE}", "", *_host_path_targets(results), ""] if "tail_grpc_p50_ms" in results.facts
          else []),
        *([f"### {RERANK_TARGETS_TITLE}", "", *_rerank_targets(results), ""]
          if "rerank_sdk_vs_cross_encoder" in results.facts else []),
        "### Against the alternatives",
        "",
        *_table([r for r in results.rows if r.sweep == "headline"]),
        "",
    ]
    if "headline" in plots:
        lines += [f"![throughput]({plots['headline'].relative_to(base)})", ""]
    for sweep, (title, _) in SWEEPS.items():
        rows = [r for r in results.rows if r.sweep == sweep]
        if rows:
            lines += [f"### {title}", "", *_table(rows), ""]
            if sweep in plots:
                lines += [f"![{sweep}]({plots[sweep].relative_to(base)})", ""]
    door = [r for r in results.rows if r.sweep == "frontdoor"]
    lines += [f"### {FRONTDOOR_TITLE}", "", *_table(door), "",
              "Against the SDK over gRPC in the same run, the door's own cost (a plain HTTP client): "
              f"{results.facts['frontdoor_batch64_vs_sdk']:.2f}× at batch 64, {results.facts['frontdoor_16_vs_sdk']:.2f}× "
              "with 16 single-sentence clients; through the openai package, which adds its own client work on the "
              f"same cores: {results.facts['openai_batch64_vs_sdk']:.2f}× and {results.facts['openai_16_vs_sdk']:.2f}×. "
              "JSON floats give "
              f"{results.facts['float_vs_base64']:.2f}× the throughput of base64 at batch 64 (the openai package asks "
              "for base64 unless told otherwise).", ""]
    tokenizer = [r for r in results.rows if r.sweep == "tokenizer"]
    if tokenizer:
        lines += [f"### {TOKENIZER_TITLE}", "", *_table(tokenizer), ""]
    reranked = [r for r in results.rows if r.sweep == "rerank"]
    if reranked:
        lines += [f"### {RERANK_TITLE}", "", *_table(reranked), ""]
    cached = [r for r in results.rows if r.sweep == "cache"]
    if cached:
        lines += [f"### {CACHE_TITLE}", "", *_cache(results, cached), ""]
    if "recall" in results.facts:
        lines += [f"### {RECALL_TITLE}", "", *_recall(results), ""]
    mixed = [r for r in results.rows if r.sweep == "mixed"]
    lines += ["### Mixed-length traffic", "", *_table(mixed), "",
              f"Encoder tokens computed per real token: {results.facts['padding_ratio']:.3f} with length groups, "
              f"{results.facts['padding_ratio_ungrouped']:.3f} with each batch run as one padded block "
              "(from the encoder's `bertserve_encoder_tokens_total` counters on Triton's metrics endpoint).", ""]
    lines += [gpu_report.section(gpu_report.recorded())]
    return "\n".join(lines)
