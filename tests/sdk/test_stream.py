"""encode_stream: 50,000 sentences with flat memory, every vector in order, and a bound on what is in flight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bertserve import Encoder

from ..conftest import STREAM_NAME
from .stream_child import sentence

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 50_000


def test_fifty_thousand_sentences_stream_with_flat_memory(server, capsys):
    result = subprocess.run([sys.executable, "-m", "tests.sdk.stream_child", server.grpc_url, STREAM_NAME, str(TOTAL)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    early, late = report["rss_mb"][str(TOTAL // 10)], report["rss_mb"][str(TOTAL - 1)]
    with capsys.disabled():
        print(f"\nstreamed {report['count']:,} sentences in {report['requests']} requests; current RSS after "
              f"{TOTAL // 10:,}: {early:.0f} MB, after {TOTAL:,}: {late:.0f} MB")
    assert report["count"] == TOTAL and report["wrong"] == []
    # What is held at once is a few requests of 256 vectors; keeping the 45,000 vectors streamed between the two
    # readings would add 45,000 x 384 floats = 66 MB (measured: a child that keeps them grows by about 70 MB).
    assert late - early < 30


def test_stream_bounds_what_is_in_flight(server):
    pulled = 0

    def source():
        nonlocal pulled
        for i in range(2000):
            pulled += 1
            yield sentence(i)

    ahead = []  # sentences taken from the source and not yet handed back, at each vector handed back
    with Encoder(server.grpc_url, model=STREAM_NAME, batch_size=50) as enc:
        for done, _ in enumerate(enc.encode_stream(source(), max_in_flight=3, progress=False), start=1):
            ahead.append(pulled - done)
    assert done == 2000
    assert max(ahead) <= 3 * 50, "more than 3 requests of 50 were taken from the source at once"
    assert max(ahead) > 2 * 50, "the stream never had 3 requests in flight"
