"""recall@k of compact vectors (perf/recall.py) against a plain per-query reimplementation of the same searches."""

from __future__ import annotations

import numpy as np
import pytest

from bertserve.errors import ConfigError
from bertserve.quantize import calibration_ranges, quantize
from perf.recall import CODES_SEARCH, FLOAT32_SEARCH, RESCORED, searches, split

DIM, K, MULTIPLIER = 20, 5, 3  # 20 dimensions: the sign bits fill 3 bytes, the last one padded


def _ranked(scores: list[float], k: int) -> list[int]:
    """The `k` best indices, ties in index order: the loops' own ranking."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def _expected(docs: np.ndarray, queries: np.ndarray, ranges) -> list[float]:
    """recall@K of each search, one query and one document at a time."""
    starts, ends = (np.asarray(row, np.float64) for row in ranges)
    steps = np.where(ends == starts, 1, (ends - starts) / 255)
    signs = [[float(v > 0) for v in doc] for doc in docs]
    recalls = []
    for q in queries:
        cosines = [float(q @ d / np.linalg.norm(q) / np.linalg.norm(d)) for d in docs]
        truth = set(_ranked(cosines, K))
        q8 = quantize(q[None], "int8", ranges)[0].astype(int)
        int8 = [int(q8 @ quantize(d[None], "int8", ranges)[0].astype(int)) for d in docs]
        restored = [(quantize(d[None], "int8", ranges)[0].astype(float) + 128) * steps + starts for d in docs]
        hamming = [-sum((a > 0) != (b > 0) for a, b in zip(q, d)) for d in docs]
        found = [truth]
        for codes, rescore_against in ((int8, restored), (hamming, signs)):
            found.append(set(_ranked(codes, K)))
            candidates = _ranked(codes, MULTIPLIER * K)
            rescored = [float(q @ np.asarray(rescore_against[i])) for i in candidates]
            found.append({candidates[j] for j in _ranked(rescored, K)})
        recalls.append([len(f & truth) / K for f in found])
    return list(np.mean(recalls, axis=0))


def test_each_search_finds_what_the_plain_loops_find():
    rng = np.random.default_rng(3)
    docs = rng.normal(size=(60, DIM)).astype(np.float32)
    # Queries near documents, so that the true neighbours are not a coin toss.
    queries = (docs[:8] + 0.6 * rng.normal(size=(8, DIM))).astype(np.float32)
    ranges = calibration_ranges(docs)
    found = searches(docs, queries, ranges, K, MULTIPLIER)
    assert [(f.dtype, f.search, f.bytes_per_vector) for f in found] == [
        ("float32", FLOAT32_SEARCH, 4 * DIM),
        ("int8", CODES_SEARCH["int8"], DIM),
        ("int8", RESCORED.format(candidates=MULTIPLIER * K, search=CODES_SEARCH["int8"]), DIM),
        ("binary", CODES_SEARCH["binary"], 3),
        ("binary", RESCORED.format(candidates=MULTIPLIER * K, search=CODES_SEARCH["binary"]), 3),
    ]
    want = _expected(docs, queries, ranges)
    assert [f.recall for f in found] == pytest.approx(want, abs=1e-12)
    assert found[0].recall == 1.0 and found[3].recall < 1.0  # the sign bits alone lose neighbours here


def test_a_corpus_too_small_to_rescore_is_refused_naming_the_size():
    vectors = np.ones((5, DIM), np.float32)
    with pytest.raises(ConfigError, match="5 vectors .* 3 x 5 candidates"):
        searches(vectors, vectors, calibration_ranges(vectors), K, MULTIPLIER)


def test_queries_are_held_out_distinct_sentences_after_the_corpus():
    docs, queries = split(50, 7)
    assert len(docs) == 50 and len(queries) == 7 and len(set(docs + queries)) == 57
