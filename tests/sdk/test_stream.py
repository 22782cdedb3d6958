"""Streaming a 100,000-sentence generator: every vector, in order, with flat memory."""

from __future__ import annotations

import resource

import numpy as np

from bertserve import Encoder

from ..conftest import STREAM_NAME

TOTAL = 100_000
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def _sentence(i: int) -> str:
    return f"{WORDS[i % 8]} {WORDS[(i // 8) % 8]} {i}"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_hundred_thousand_sentences_stream_with_flat_memory(server, capsys):
    probes = {0, 1, 777, 50_000, TOTAL - 1}
    with Encoder(server.grpc_url, model=STREAM_NAME, timeout=120) as enc:
        expected = dict(zip(sorted(probes), enc.encode([_sentence(i) for i in sorted(probes)])))
        count, peaks = 0, {}
        for i, vector in enumerate(enc.encode_stream((_sentence(i) for i in range(TOTAL)), progress=False)):
            if i in probes:
                assert np.abs(vector - expected[i]).max() <= 1e-5, f"vector {i} is not the one for sentence {i}"
            if i in (10_000, TOTAL - 1):
                peaks[i] = _peak_rss_mb()
            count += 1
        status = enc.status()
    with capsys.disabled():
        print(f"\nstreamed {count} sentences in {status.requests} requests; peak RSS after 10,000: "
              f"{peaks[10_000]:.0f} MB, after {TOTAL:,}: {peaks[TOTAL - 1]:.0f} MB")
    assert count == TOTAL
    # Everything held at once is a few requests of 256 vectors; 90,000 more vectors would be 130+ MB.
    assert peaks[TOTAL - 1] - peaks[10_000] < 30
