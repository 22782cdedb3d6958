"""The GPU harness's report: BENCHMARKS.md's GPU section, one table per model with its targets met or missed,
where the time goes, and what CUDA graphs gain."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .results import GPU_RESULTS, cpu_text, load_gpu

ROOT = Path(__file__).resolve().parent
TARGET_SENTENCES_PER_S = 20_000  # at length 20, through Triton
TARGET_RATIO = 0.8  # of in-process PyTorch fp16, at length 128
RECORDED = ROOT / "results" / GPU_RESULTS  # the run BENCHMARKS.md shows
SECTION_TITLE = "## GPU (fp16 encoder through Triton)"


def recorded() -> Optional[dict]:
    """The recorded GPU run, if one was made."""
    return load_gpu(RECORDED)


def section(results: Optional[dict]) -> str:
    """BENCHMARKS.md's GPU section: the recorded run, or the plain statement that there is none."""
    head = [SECTION_TITLE, ""]
    if results is None:
        return "\n".join(head + [
            f"**Not measured yet.** Targets: at least {TARGET_SENTENCES_PER_S:,} sentences/s at length 20 through "
            f"Triton, and at least {TARGET_RATIO}x in-process PyTorch fp16 at length 128, on one GPU, in the same "
            "run. `bash perf/gpu.sh` on a GPU machine measures them (see `perf/gpu.py`).", ""])
    return "\n".join(head + [
        f"Measured {results.get('date', '')} with `bash perf/gpu.sh` (bundle from `perf/gpu_bundle.sh`); raw "
        "numbers in `perf/results/gpu.json`. Models of the shapes of BERT-base and all-MiniLM-L6-v2 with seeded "
        "random weights (speed does not depend on the values); sentences of exactly the given number of tokens; "
        f"{results['settings']['seconds']:.0f} s per point, clients timed over one common window.", "",
        report(results)])


def write_section(markdown: Path, results: dict) -> None:
    """Replace BENCHMARKS.md's GPU section (the last one) with `results`."""
    text = markdown.read_text()
    markdown.write_text(text[: text.index("\n## GPU") + 1] + section(results))


def report(results: dict) -> str:
    """The markdown section for BENCHMARKS.md: one table per model, targets marked met or missed."""
    machine_info, points = results["machine"], results["points"]
    settings = results["settings"]
    lines = [
        f"GPU: **{machine_info.get('gpu') or 'none'}**; CPU: {cpu_text(machine_info)}; "
        f"PyTorch {machine_info['torch']}. Service: `--runtime torch --precision fp16`, "
        f"{settings['encoder_instances']} encoder instances on the GPU, {settings['tokenizer_instances']} tokenizer "
        f"instances, batches merged up to {settings['max_batch_size']}; clients send {settings['request_batch']} "
        "sentences per request through the SDK over gRPC, from up to 8 processes. In-process: transformers' "
        "BertModel fp16 with SDPA, tokenizer and mean pooling in the caller's process, its best batch size.",
        "",
    ]
    verdicts = []
    for model in dict.fromkeys(p["model"] for p in points):
        table, verdicts_of_model = _model_table(model, [p for p in points if p["model"] == model])
        lines += table
        verdicts += verdicts_of_model
    lines += ["Targets:", ""] + verdicts + [""] + _where_time_goes(points)
    if results.get("min_cosine_to_fp32"):
        cosines = ", ".join(f"{name} {value:.5f}" for name, value in results["min_cosine_to_fp32"].items())
        lines += [f"Served vectors against transformers fp32 on the CPU, 128 sentences: smallest cosine {cosines}.", ""]
    if results.get("errors"):
        lines += ["Errors during the run:", ""] + [f"- `{error[:300]}`" for error in results["errors"]] + [""]
    if results.get("cuda_graphs"):
        lines += _cuda_graphs(results["cuda_graphs"])
    return "\n".join(lines)


def _model_table(model: str, mine: list[dict]) -> tuple[list[str], list[str]]:
    """One model's table (in-process, its ceiling, the service at each load, per length) and its target verdicts."""
    served = [p for p in mine if p["system"].startswith("bertserve")]
    lines, verdicts = [f"**{model}** (sentences/s; GPU utilisation in brackets)", ""], []
    concurrencies = sorted({p["concurrency"] for p in served})
    header = ["length", "in-process fp16", "tokens already on GPU"] + [f"bertserve, {c} in flight" for c in concurrencies]
    header.append("best / in-process")
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for length in sorted({p["length"] for p in mine}):
        def best(system: str) -> Optional[dict]:
            found = [p for p in mine if p["system"] == system and p["length"] == length]
            return max(found, key=lambda p: p["sentences_per_s"]) if found else None

        base, ceiling = best("PyTorch fp16 in-process"), best("PyTorch fp16, tokens already on GPU")
        row = [str(length), _cell(base), _cell(ceiling)]
        served_here = {p["concurrency"]: p for p in served if p["length"] == length}
        row += [_cell(served_here.get(c)) for c in concurrencies]
        top = max(served_here.values(), key=lambda p: p["sentences_per_s"]) if served_here else None
        ratio = top["sentences_per_s"] / base["sentences_per_s"] if top and base else None
        row.append(f"{ratio:.2f}x" if ratio else "n/a")
        lines.append("| " + " | ".join(row) + " |")
        if top and length == min(p["length"] for p in mine):
            met = top["sentences_per_s"] >= TARGET_SENTENCES_PER_S
            verdicts.append(f"- {model}, length {length}: {top['sentences_per_s']:,.0f} sentences/s through Triton, "
                            f"target {TARGET_SENTENCES_PER_S:,}: **{'met' if met else 'missed'}**")
        if ratio and length == max(p["length"] for p in mine):
            verdicts.append(f"- {model}, length {length}: {ratio:.2f}x in-process PyTorch fp16, target "
                            f"{TARGET_RATIO}x: **{'met' if ratio >= TARGET_RATIO else 'missed'}**")
    lines.append("")
    return lines, verdicts


def _cuda_graphs(graphs: list[dict]) -> list[str]:
    """The CUDA graph table, and where graphs pay."""
    lines = ["CUDA graphs (fixed shape, forward passes only, sentences/s):", "",
             "| model | length | batch | eager | graph | gain |", "|---|---:|---:|---:|---:|---:|"]
    for g in graphs:
        lines.append(f"| {g['model']} | {g['length']} | {g['batch']} | {g['eager_per_s']:,.0f} | "
                     f"{g['graph_per_s']:,.0f} | {g['gain']:.2f}x |")
    pays = [f"{g['model']} at length {g['length']}" for g in graphs if g["gain"] >= 1.1]
    idle = [f"{g['model']} at length {g['length']}" for g in graphs if g["gain"] < 1.1]
    return lines + ["", f"CUDA graphs pay where the forward pass is bound by kernel launches "
                    f"({', '.join(pays) or 'nowhere'}), not where the GPU is already busy "
                    f"({', '.join(idle) or 'nowhere'}). The torch runtime does not capture them.", ""]


def _where_time_goes(points: list[dict]) -> list[str]:
    """Per model, at its longest length and most requests in flight: what limits the service, from Triton's
    statistics (queue and compute per request of each step) and the GPU's utilisation."""
    lines = []
    for model in dict.fromkeys(p["model"] for p in points):
        served = [p for p in points if p["model"] == model and p["system"].startswith("bertserve") and p["breakdown"]]
        if not served:
            continue
        top = max(served, key=lambda p: (p["length"], p["concurrency"]))
        steps = top["breakdown"]
        tokenizer, encoder = steps.get("tokenizer"), steps.get("encoder")
        if not tokenizer or not encoder:
            continue
        if top["gpu_util"] >= 85:
            verdict = "the GPU is the limit"
        elif tokenizer["queue_ms"] > encoder["queue_ms"]:
            verdict = "the tokenizer is the limit (requests wait for it, not for the GPU)"
        else:
            verdict = "the encoder step is the limit, with the GPU not busy: its Python and transfer work"
        lines.append(
            f"- {model}, length {top['length']}, {top['concurrency']} in flight: GPU {top['gpu_util']:.0f}% busy; "
            f"per request, tokenizer {tokenizer['queue_ms']:.1f} ms queued + {tokenizer['compute_ms']:.1f} ms "
            f"(batches of {tokenizer['batch']:.0f}), encoder {encoder['queue_ms']:.1f} ms queued + "
            f"{encoder['compute_ms']:.1f} ms (batches of {encoder['batch']:.0f}): {verdict}.")
    return ["Where the time goes:", ""] + lines + [""] if lines else []


def _cell(point: Optional[dict]) -> str:
    if not point:
        return "n/a"
    util = f" ({point['gpu_util']:.0f}%)" if point["gpu_util"] >= 0 else ""
    return f"{point['sentences_per_s']:,.0f}{util}"

