"""Timing loops shared by every baseline: throughput and latency percentiles over a fixed window."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Measurement:
    sentences_per_s: float
    p50_ms: float
    p99_ms: float
    # The tail, where the loop kept every latency (timed does; perf_analyzer reports p99 at most).
    p999_ms: Optional[float] = None
    max_ms: Optional[float] = None


@dataclass(frozen=True)
class Tail:
    """A latency distribution's middle and tail: how far the slowest requests are from the typical one."""

    requests: int
    p50_ms: float
    p999_ms: float
    max_ms: float


def tail(ms: np.ndarray) -> Tail:
    """p50, p99.9 and max of latencies in ms."""
    return Tail(len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 99.9)), float(ms.max()))


def timed(call: Callable[[], int], seconds: float, clients: int = 1, warmup: int = 2) -> Measurement:
    """Run `call` (which returns how many sentences it encoded) from `clients` threads for `seconds`."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def loop() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            n = call()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                done[0] += n

    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    spread = tail(ms)
    return Measurement(done[0] / wall, spread.p50_ms, float(np.percentile(ms, 99)), spread.p999_ms, spread.max_ms)
