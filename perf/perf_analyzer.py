"""Run Triton's perf_analyzer (from the tritonclient 2.51.0 wheel) and read its CSV report."""

from __future__ import annotations

import csv
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .measure import Measurement

TOOLS = Path(__file__).resolve().parent.parent / ".tools" / "perf_analyzer"


def binary() -> Path:
    path = Path(os.environ.get("BERTSERVE_PERF_ANALYZER", TOOLS / "bin" / "perf_analyzer"))
    if not path.is_file():
        raise FileNotFoundError(f"perf_analyzer not found at {path}; run `make perf-tools`")
    return path


@dataclass(frozen=True)
class PerfAnalyzer:
    url: str  # host:port of the protocol's endpoint
    protocol: str  # "grpc" or "http"
    window_ms: int
    stability_percent: int  # how far measurement windows may differ and still count as stable

    def measure(self, model: str, data: Path, batch: int, concurrency: int) -> Measurement:
        """Sentences/s and request latency at one batch size and concurrency."""
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "report.csv"
            command = [
                str(binary()), "-m", model, "-u", self.url, "-i", self.protocol, "-b", str(batch),
                "--input-data", str(data), "--concurrency-range", str(concurrency),
                "--measurement-interval", str(self.window_ms), "--stability-percentage", str(self.stability_percent),
                "--max-trials", "10", "--percentile", "99", "-f", str(report),
            ]
            env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
                [str(TOOLS / "nvidia" / "cuda_runtime" / "lib"), os.environ.get("LD_LIBRARY_PATH", "")])}
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
            if result.returncode != 0 or not report.is_file():
                raise RuntimeError(f"perf_analyzer failed ({' '.join(command)}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
            row = next(csv.DictReader(report.open()))
        return Measurement(
            sentences_per_s=float(row["Inferences/Second"]),
            p50_ms=float(row["p50 latency"]) / 1000,
            p99_ms=float(row["p99 latency"]) / 1000,
        )
