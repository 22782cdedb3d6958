"""Run Triton's perf_analyzer (from the tritonclient 2.51.0 wheel) and read its CSV report."""

from __future__ import annotations

import csv
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .measure import Measurement

TOOLS = Path(__file__).resolve().parent.parent / ".tools" / "perf_analyzer"


def binary() -> Path:
    path = Path(os.environ.get("BERTSERVE_PERF_ANALYZER", TOOLS / "bin" / "perf_analyzer"))
    if not path.is_file():
        raise FileNotFoundError(f"perf_analyzer not found at {path}; run `make perf-tools`")
    return path


class _Unstable(Exception):
    """perf_analyzer found no run of stable measurement windows."""


class _TooShort(Exception):
    """No request finished within a measurement window: a request takes longer than the window on this machine."""


_TOO_SHORT = "No valid requests recorded within time interval"
# Windows double up to this while no request finishes within one (a batch of 64 on a slow, loaded CPU).
LONGEST_WINDOW_MS = 32_000


@dataclass(frozen=True)
class PerfAnalyzer:
    url: str  # host:port of the protocol's endpoint
    protocol: str  # "grpc" or "http"
    window_ms: int
    stability_percent: int  # how far measurement windows may differ and still count as stable
    unstable: list[str] = field(default_factory=list)  # points measured without the stability check

    def measure(self, model: str, data: Path, batch: int, concurrency: int) -> Measurement:
        """Sentences/s and request latency at one batch size and concurrency.

        On a noisy machine perf_analyzer may find no stable windows; it is then asked once more with windows
        twice as long, as its own message advises, and if that fails too, its figures are taken without the
        stability check and the point is listed in `unstable` (BENCHMARKS.md names it). Where no request
        finishes within a window at all (a slow machine), windows double until one does.
        """
        window_ms = self.window_ms
        while True:
            try:
                return self._measure_stable(model, data, batch, concurrency, window_ms)
            except _TooShort as exc:
                if 2 * window_ms > LONGEST_WINDOW_MS:
                    raise RuntimeError(f"perf_analyzer finished no request within {window_ms} ms: {exc}") from None
                window_ms *= 2

    def _measure_stable(self, model: str, data: Path, batch: int, concurrency: int, window_ms: int) -> Measurement:
        try:
            return self._measure(model, data, batch, concurrency, window_ms, self.stability_percent)
        except _Unstable:
            pass
        try:
            return self._measure(model, data, batch, concurrency, 2 * window_ms, self.stability_percent)
        except _Unstable:
            self.unstable.append(f"{model}, {self.protocol}, batch {batch}, {concurrency} in flight")
            return self._measure(model, data, batch, concurrency, 2 * window_ms, 100_000)

    def _measure(self, model: str, data: Path, batch: int, concurrency: int, window_ms: int,
                 stability_percent: int) -> Measurement:
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "report.csv"
            command = [
                str(binary()), "-m", model, "-u", self.url, "-i", self.protocol, "-b", str(batch),
                "--input-data", str(data), "--concurrency-range", str(concurrency),
                "--measurement-interval", str(window_ms), "--stability-percentage", str(stability_percent),
                "--max-trials", "10", "--percentile", "99", "-f", str(report),
            ]
            env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
                [str(TOOLS / "nvidia" / "cuda_runtime" / "lib"), os.environ.get("LD_LIBRARY_PATH", "")])}
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
            if result.returncode != 0 and "Failed to obtain stable measurement" in result.stdout + result.stderr:
                raise _Unstable()
            if result.returncode != 0 and _TOO_SHORT in result.stdout + result.stderr:
                raise _TooShort(" ".join(command))
            if result.returncode != 0 or not report.is_file():
                raise RuntimeError(f"perf_analyzer failed ({' '.join(command)}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
            row = next(csv.DictReader(report.open()))
        return Measurement(
            sentences_per_s=float(row["Inferences/Second"]),
            p50_ms=float(row["p50 latency"]) / 1000,
            p99_ms=float(row["p99 latency"]) / 1000,
        )
