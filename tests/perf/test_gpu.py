"""The GPU harness (`perf/gpu*.py`): BENCHMARKS.md shows the recorded run, verdicts follow the numbers, and the
harness runs end to end (on the CPU here, so that it still works when a GPU machine is next available)."""

from __future__ import annotations

import copy
import json

import pytest

from perf import gpu_report as gpu
from perf.gpu_run import run
from perf.results import GpuSettings

ROOT_BENCHMARKS = gpu.ROOT / "BENCHMARKS.md"


def test_benchmarks_md_shows_the_recorded_gpu_run():
    recorded = gpu.recorded()
    assert recorded is not None, "perf/results/gpu.json is missing"
    text = ROOT_BENCHMARKS.read_text()
    assert text.endswith(gpu.section(recorded)), "BENCHMARKS.md's GPU section is not the recorded run's"
    assert "NVIDIA" in recorded["machine"]["gpu"] and recorded["device"] == "cuda"
    assert not recorded["errors"]


def _served(results, model, length):
    return [p for p in results["points"] if p["model"] == model and p["length"] == length
            and p["system"].startswith("bertserve")]


def test_verdicts_follow_the_numbers():
    results = copy.deepcopy(gpu.recorded())
    model = results["points"][0]["model"]
    shortest = min(p["length"] for p in results["points"])
    assert f"- {model}, length {shortest}: " in gpu.report(results)
    for point in _served(results, model, shortest):
        point["sentences_per_s"] = gpu.TARGET_SENTENCES_PER_S - 1
    text = gpu.report(results)
    assert f"{gpu.TARGET_SENTENCES_PER_S - 1:,} sentences/s through Triton, target {gpu.TARGET_SENTENCES_PER_S:,}: " \
           "**missed**" in text
    longest = max(p["length"] for p in results["points"])
    base = max(p["sentences_per_s"] for p in results["points"] if p["model"] == model and p["length"] == longest
               and p["system"] == "PyTorch fp16 in-process")
    for point in _served(results, model, longest):
        point["sentences_per_s"] = base * 0.5
    assert f"- {model}, length {longest}: 0.50x in-process PyTorch fp16, target 0.8x: **missed**" in gpu.report(results)


def test_no_recorded_run_says_so():
    assert "**Not measured yet.**" in gpu.section(None)


@pytest.mark.server
def test_the_harness_runs_end_to_end(tmp_path, minilm_dir):
    results = run(GpuSettings.quick(), tmp_path, tmp_path / "work", minilm_dir)
    assert not results["errors"]
    assert json.loads((tmp_path / "gpu.json").read_text()) == json.loads(json.dumps(results))
    systems = {(p["model"], p["system"]) for p in results["points"]}
    assert systems == {(m, s) for m in ("bert-base", "minilm-l6") for s in (
        "PyTorch fp16 in-process", "PyTorch fp16, tokens already on GPU", "bertserve (Triton, torch runtime)")}
    assert all(p["sentences_per_s"] > 0 for p in results["points"])
    assert min(results["min_cosine_to_fp32"].values()) >= 0.999
    served = [p for p in results["points"] if p["system"].startswith("bertserve")]
    assert all(set(p["breakdown"]) == {"ensemble", "tokenizer", "encoder"} for p in served)


def test_readme_quotes_the_recorded_gpu_run():
    results = gpu.recorded()
    readme = (gpu.ROOT.parent / "README.md").read_text()
    for model in ("bert-base", "minilm-l6"):
        best = max(p["sentences_per_s"] for p in _served(results, model, 20))
        assert f"{round(best, -3):,.0f}" in readme, (model, best)
        base = max(p["sentences_per_s"] for p in results["points"] if p["model"] == model and p["length"] == 128
                   and p["system"] == "PyTorch fp16 in-process")
        ratio = max(p["sentences_per_s"] for p in _served(results, model, 128)) / base
        assert f"{ratio:.1f}x" in readme, (model, ratio)
