"""perf_analyzer's windows grow on a machine too slow to finish a request within one (issue 19: the quick bench's
500 ms windows held no batch of 64 on a loaded 2-core CPU). perf_analyzer itself is stood in for by a script
that answers as it does, so that the retry logic is checked in milliseconds."""

from __future__ import annotations

import pytest

from perf import perf_analyzer
from perf.perf_analyzer import LONGEST_WINDOW_MS, PerfAnalyzer

_FAKE = """#!/bin/sh
# Answers as perf_analyzer 2.51 does when no request finishes within --measurement-interval (ms) below $SLOWEST.
while [ $# -gt 0 ]; do
  case "$1" in
    --measurement-interval) window=$2; shift ;;
    -f) report=$2; shift ;;
  esac
  shift
done
echo "$window" >> "$CALLS"
if [ "$window" -lt "$SLOWEST" ]; then
  echo "No valid requests recorded within time interval. Please use a larger time window."; exit 1
fi
printf 'Concurrency,Inferences/Second,p50 latency,p99 latency\\n1,12.5,1500000,1900000\\n' > "$report"
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    binary = tmp_path / "perf_analyzer"
    binary.write_text(_FAKE)
    binary.chmod(0o755)
    monkeypatch.setenv("BERTSERVE_PERF_ANALYZER", str(binary))
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    return tmp_path / "calls"


def test_windows_double_until_a_request_finishes_within_one(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("SLOWEST", "2000")
    measured = PerfAnalyzer("127.0.0.1:1", "grpc", 500, 100_000).measure("m", tmp_path / "data.json", 64, 1)
    assert (measured.sentences_per_s, measured.p50_ms, measured.p99_ms) == (12.5, 1500.0, 1900.0)
    assert fake.read_text().split() == ["500", "1000", "2000"]


def test_a_machine_too_slow_for_the_longest_window_fails_plainly(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("SLOWEST", str(10 * LONGEST_WINDOW_MS))
    with pytest.raises(RuntimeError, match=f"no request within {LONGEST_WINDOW_MS} ms"):
        PerfAnalyzer("127.0.0.1:1", "grpc", 500, 100_000).measure("m", tmp_path / "data.json", 64, 1)
    assert int(fake.read_text().split()[-1]) == LONGEST_WINDOW_MS
    assert perf_analyzer.binary().name == "perf_analyzer"
