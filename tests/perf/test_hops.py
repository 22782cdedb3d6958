"""What `python -m perf.breakdown --hops` computes from Triton's statistics and the client's latencies."""

from __future__ import annotations

import numpy as np
import pytest

from perf.hops import OTHER_DELAY, Hop, StepTimes, costs, step_times
from perf.measure import Tail, tail


def _entry(success: int, executions: int, **ns: int) -> dict:
    """A statistics entry as Triton's gRPC JSON writes it: 64-bit counters as strings."""
    stats = {"success": {"count": str(success), "ns": "0"}}
    stats.update({step: {"count": str(success), "ns": str(value)} for step, value in ns.items()})
    return {"name": "m", "execution_count": str(executions), "inference_stats": stats}


def test_step_times_are_per_request_means_over_the_measured_requests_only():
    before = _entry(10, 8, queue=5_000_000, compute_input=1_000_000, compute_infer=90_000_000, compute_output=2_000_000)
    after = _entry(110, 58, queue=25_000_000, compute_input=3_000_000, compute_infer=190_000_000,
                   compute_output=12_000_000)
    assert step_times(before, after) == StepTimes(requests=100, executions=50, queue_ms=0.2, compute_input_ms=0.02,
                                                  compute_infer_ms=1.0, compute_output_ms=0.1)
    assert step_times(after, after) == StepTimes(0, 0, 0.0, 0.0, 0.0, 0.0)  # no requests: no division by zero


def test_tail_keeps_the_slowest_request():
    ms = np.array([10.0] * 999 + [510.0])
    # p99.9 of 1,000 interpolates 0.1% of the way from the 999th latency to the 1,000th: one stall shows in it.
    assert tail(ms) == Tail(1000, 10.0, pytest.approx(10.5), 510.0)


def test_costs_are_differences_of_client_p50s():
    def hop(path: str, p50: float, infer: float = 0.0) -> Hop:
        return Hop(path, Tail(100, p50, p50 * 2, p50 * 3), {"m_tokenizer": StepTimes(100, 100, 0.0, 0.0, infer, 0.0)})

    hops = [hop("ensemble, gRPC", 12.0), hop("ensemble, HTTP", 13.5),
            hop("tokenizer model alone, gRPC (strings in)", 1.2, infer=0.5),
            hop("encoder model alone, gRPC (ids in)", 10.0), hop("tokenizer then encoder from the client, gRPC", 11.0),
            hop(OTHER_DELAY, 10.0)]
    # Exported with a 2 ms delay, measured again without: the delay costs the difference.
    assert costs(hops, Tail(100, 0.2, 0.3, 0.4), 2000) == pytest.approx({
        "http_over_grpc_ms": 1.5, "ensemble_over_two_calls_ms": 1.0, "tokenizer_round_trip_ms": 1.2,
        "tokenizer_round_trip_over_in_process_ms": 1.0, "tokenizer_triton_infer_ms": 0.5,
        "encoder_round_trip_ms": 10.0, "batcher_delay_ms": 2.0})
    # Exported without a delay, measured again with one: still the delay's cost, now negative here.
    assert costs(hops, Tail(100, 0.2, 0.3, 0.4), 0)["batcher_delay_ms"] == pytest.approx(-2.0)
