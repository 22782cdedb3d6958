"""Timing loops shared by every baseline: throughput and latency percentiles over a fixed window."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Measurement:
    sentences_per_s: float
    p50_ms: float
    p99_ms: float


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
    return Measurement(done[0] / wall, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))
