"""`python -m perf --quick`: the whole harness runs and writes every artefact. Timing is not checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_results_plots_and_table(tmp_path):
    markdown = tmp_path / "BENCHMARKS.md"
    result = subprocess.run([sys.executable, "-m", "perf", "--quick", "--out", str(tmp_path), "--markdown", str(markdown)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    systems = {row["system"] for row in data["rows"]}
    for expected in ("sentence-transformers (in-process)", "ONNX Runtime (in-process, same graph)",
                     "infinity-emb (server, torch)", "bertserve (perf_analyzer, gRPC)", "bertserve (perf_analyzer, HTTP)",
                     "bertserve (Python SDK, gRPC)"):
        assert expected in systems
    assert all(row["sentences_per_s"] > 0 for row in data["rows"])
    assert {"seq_len", "batch", "clients", "layer", "mixed"} <= {row["sweep"] for row in data["rows"]}
    for plot in ("headline", "seq_len", "batch", "clients", "layer"):
        assert (tmp_path / f"{plot}.png").stat().st_size > 1000
    table = markdown.read_text()
    assert "### Targets" in table and "× sentence-transformers" in table and "## GPU" in table
    assert 0.99 < data["facts"]["padding_ratio"] <= data["facts"]["padding_ratio_ungrouped"]
    # The table is a pure function of results.json: re-rendering it measures nothing and changes nothing.
    again = tmp_path / "again" / "BENCHMARKS.md"  # same layout: plots beside the table
    rerender = subprocess.run([sys.executable, "-m", "perf", "--from-results", str(tmp_path / "results.json"),
                               "--out", str(again.parent), "--markdown", str(again)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerender.returncode == 0, rerender.stderr[-3000:]
    assert again.read_text() == table
