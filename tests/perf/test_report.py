"""What BENCHMARKS.md computes from a run: ratios, the baseline kept after a second measurement, target verdicts."""

from __future__ import annotations

from perf.bench import Results, Settings
from perf.measure import Measurement
from perf.report import write

from .markdown import tables

ST, PA, SDK = "sentence-transformers (in-process)", "bertserve (perf_analyzer, gRPC)", "bertserve (Python SDK, gRPC)"


def _run() -> Results:
    results = Results(Settings.quick(), {"cpu": "a test CPU, 2 cores", "python": "3", "triton": "2.51.0",
                                         "onnxruntime": "1", "torch": "2", "sentence-transformers": "3",
                                         "date": "2026-11-25"})
    st64 = results.add("headline", ST, "batch 64", 64, Measurement(400.0, 160.0, 170.0))
    st1 = results.add("headline", ST, "batch 1", 1, Measurement(50.0, 20.0, 25.0))
    pa64 = results.add("headline", PA, "batch 64", 64, Measurement(500.0, 128.0, 140.0), st64)
    pa1 = results.add("headline", PA, "batch 1", 1, Measurement(100.0, 9.0, 12.0), st1)
    pa16 = results.add("headline", PA, "16 clients x batch 1", 16, Measurement(300.0, 50.0, 90.0), st64)
    sdk64 = results.add("headline", SDK, "batch 64", 64, Measurement(440.0, 145.0, 150.0), st64)
    base = results.add("seq_len", ST, "8 tokens", 8, Measurement(120.0, 30.0, 40.0))
    results.add("seq_len", PA, "8 tokens", 8, Measurement(330.0, 12.0, 17.0), base)
    results.keep_faster(st64, Measurement(440.0, 150.0, 160.0))  # the baseline measured faster at the end
    results.keep_faster(st1, Measurement(40.0, 25.0, 30.0))  # and slower: the first measurement stays
    results.facts.update(
        batch64_vs_st=pa64.ratio, sdk_batch64_vs_st=sdk64.ratio,
        concurrent16_vs_batch64=pa16.result.sentences_per_s / pa64.result.sentences_per_s,
        single_p50_ms=pa1.result.p50_ms, sdk_single_p50_ms=11.0, st_single_p50_ms=st1.result.p50_ms,
        padding_ratio=1.5, padding_ratio_ungrouped=2.4, int8_vs_st=2.2, int8_cosine_mean=0.995, int8_cosine_min=0.99,
        frontdoor_batch64_vs_sdk=0.95, frontdoor_16_vs_sdk=0.72, openai_batch64_vs_sdk=0.9, openai_16_vs_sdk=0.6,
        float_vs_base64=0.7, unstable=["m, grpc, batch 1, 1 in flight"],
    )
    return results


def test_ratios_use_the_faster_baseline_and_targets_say_by_how_much_they_missed(tmp_path):
    write(_run(), tmp_path, tmp_path / "BENCHMARKS.md")
    found = tables((tmp_path / "BENCHMARKS.md").read_text())

    cells = {(r["system"], r["load"]): (r["sentences/s"], r["× sentence-transformers"])
             for r in found["Against the alternatives"]}
    assert cells[ST, "batch 64"] == ("440.0", "baseline")  # the faster of its two measurements
    assert cells[PA, "batch 64"] == ("500.0", "1.14×")  # 500 / 440, not 500 / 400
    assert cells[PA, "16 clients x batch 1"] == ("300.0", "0.68×")
    assert cells[SDK, "batch 64"] == ("440.0", "1.00×")
    assert cells[ST, "batch 1"] == ("50.0", "baseline") and cells[PA, "batch 1"] == ("100.0", "2.00×")
    (seq,) = [r for r in found["Sequence length"] if r["system"] == PA]
    assert (seq["sentences/s"], seq["× sentence-transformers"]) == ("330.0", "2.75×")

    verdicts = {" ".join(r["target"].split(" ")[:2]): (r["measured"], r["met"]) for r in found["Targets"]}
    assert verdicts["batch-64 throughput"] == ("1.14× (SDK end to end: 1.00×)", "**no**: missed by 5%")  # 1.136 / 1.2
    assert verdicts["16 concurrent"] == ("0.60×", "**no**: missed by 25%")  # 300 / 500 against 0.8
    assert verdicts["single-sentence p50"] == ("9.00 ms (SDK 11.00 ms) vs 20.00 ms", "yes")  # lower is better
    assert verdicts["mixed-length traffic"] == ("1.500", "**no**: missed by 20%")  # 1.5 against at most 1.25
    assert verdicts["int8 ≥"] == ("2.20×", "yes") and verdicts["int8 cosine"] == ("0.9950 (min 0.9900)", "yes")
    doors = [(r["measured"], r["met"]) for r in found["Targets"] if r["target"].startswith("OpenAI front door")]
    assert doors == [("0.95× (through the openai package: 0.90×)", "yes"),
                     ("0.72× (through the openai package: 0.60×)", "**no**: missed by 20%")]  # 0.72 against 0.9
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "no stable windows (even 1000 ms long) for: m, grpc, batch 1, 1 in flight" in text
