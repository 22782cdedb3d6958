"""Run by test_stream.py in a process of its own: stream sentences and report the current RSS on the way.

A process of its own, so that nothing the test session did before (exports, other tests) moves the
figures; current RSS (/proc/self/statm), not the peak, so that memory freed again does not count.

    python -m tests.sdk.stream_child URL MODEL TOTAL
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from bertserve import Encoder

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def sentence(i: int) -> str:
    return f"{WORDS[i % 8]} {WORDS[(i // 8) % 8]} {i}"


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(url: str, model: str, total: int) -> None:
    probes = sorted({0, 1, 777, total // 2, total - 1})
    marks = {total // 10, total - 1}
    with Encoder(url, model=model, timeout=120) as enc:
        expected = dict(zip(probes, enc.encode([sentence(i) for i in probes])))
        count, rss, wrong = 0, {}, []
        for i, vector in enumerate(enc.encode_stream((sentence(i) for i in range(total)), progress=False)):
            if i in expected and np.abs(vector - expected[i]).max() > 1e-5:
                wrong.append(i)
            if i in marks:
                rss[i] = rss_mb()
            count += 1
        requests = enc.status().requests
    print(json.dumps({"count": count, "rss_mb": rss, "wrong": wrong, "requests": requests}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
