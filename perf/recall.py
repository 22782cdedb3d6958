"""Retrieval quality of compact vectors (issue 23): recall@10 of int8 and binary codes against float32.

The truth is each query's float32 top 10 over the corpus (cosine). The compact searches follow sentence-transformers'
`semantic_search_usearch`: int8 ranks by the inner product of query and document codes (its index's metric), binary
by the Hamming distance of the sign bits; "float rescoring" takes the top `RESCORE_MULTIPLIER` x 10 candidates of
that search and ranks them by the float32 query against the documents' dequantized int8 codes or unpacked bits.
Ties keep corpus order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertserve.errors import ConfigError
from bertserve.quantize import OutputDtype, quantize

K = 10  # recall@K
RESCORE_MULTIPLIER = 4  # candidates rescored per result kept, as sentence-transformers' binary-rescoring example
FLOAT32_SEARCH = "cosine (the truth)"
CODES_SEARCH = {OutputDtype.INT8.value: "inner product of int8 codes",
                OutputDtype.BINARY.value: "Hamming distance of sign bits"}
RESCORED = "top {candidates} by {search}, rescored with the float32 query"


@dataclass(frozen=True)
class Search:
    """One way of searching the corpus, its vectors' size, and how many of the true top K it finds."""

    dtype: str  # the output_dtype the corpus is stored as
    search: str
    bytes_per_vector: int
    recall: float  # recall@K, averaged over the queries


def split(corpus: int, queries: int) -> tuple[list[str], list[str]]:
    """`corpus` distinct sentences of the varied corpus (export/corpus.py), and the next `queries` distinct ones,
    held out as queries."""
    from bertserve.export.corpus import sentences

    wanted, drawn = corpus + queries, 2 * (corpus + queries)
    distinct = list(dict.fromkeys(sentences(drawn)))
    if len(distinct) < wanted:
        raise ConfigError(f"the varied corpus has {len(distinct)} distinct sentences in its first {drawn}, fewer than "
                          f"the {wanted} asked for; ask for a smaller corpus or fewer queries")
    return distinct[:corpus], distinct[corpus:wanted]


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of each row's `k` highest scores, best first; ties in index order."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """The share of each row of `truth` that the same row of `found` holds, averaged over rows."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def searches(docs: np.ndarray, queries: np.ndarray, ranges: Sequence[Sequence[float]], k: int = K,
             multiplier: int = RESCORE_MULTIPLIER) -> list[Search]:
    """recall@`k` of float32 (1 by definition), int8 and binary, each without and with float rescoring of
    `multiplier` x `k` candidates; int8 codes from the model's calibrated `ranges`."""
    if len(docs) < multiplier * k:
        raise ConfigError(f"a corpus of {len(docs)} vectors is too small to rescore {multiplier} x {k} candidates; "
                          f"use at least {multiplier * k} documents")
    docs, queries = np.asarray(docs, np.float32), np.asarray(queries, np.float32)
    truth = top(_unit(queries) @ _unit(docs).T, k)
    dim = docs.shape[1]
    found = [Search(OutputDtype.FLOAT32.value, FLOAT32_SEARCH, 4 * dim, recall_at(truth, truth))]
    int8 = quantize(docs, OutputDtype.INT8, ranges)
    binary = quantize(docs, OutputDtype.BINARY, ranges)
    stored = {  # dtype: (codes scores, what the float query is rescored against, bytes per vector)
        OutputDtype.INT8: (quantize(queries, OutputDtype.INT8, ranges).astype(np.int64) @ int8.astype(np.int64).T,
                           dequantize(int8, ranges), int8.shape[1]),
        OutputDtype.BINARY: (-hamming(quantize(queries, OutputDtype.BINARY), binary), bits(binary, dim),
                             binary.shape[1]),
    }
    for dtype, (scores, rescore_against, size) in stored.items():
        found.append(Search(dtype.value, CODES_SEARCH[dtype.value], size, recall_at(top(scores, k), truth)))
        candidates = top(scores, multiplier * k)
        rescored = np.einsum("qd,qcd->qc", queries.astype(np.float64), rescore_against[candidates])
        kept = np.take_along_axis(candidates, top(rescored, k), axis=1)
        rescoring = RESCORED.format(candidates=multiplier * k, search=CODES_SEARCH[dtype.value])
        found.append(Search(dtype.value, rescoring, size, recall_at(kept, truth)))
    return found


def dequantize(codes: np.ndarray, ranges: Sequence[Sequence[float]]) -> np.ndarray:
    """int8 codes back to the float values they step from, as sentence-transformers rescores int8 candidates."""
    limits = np.asarray(ranges, np.float32)
    steps = (limits[1] - limits[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    return (codes.astype(np.float64) + 128) * steps + limits[0]


def bits(packed: np.ndarray, dim: int) -> np.ndarray:
    """binary codes (packed sign bits, offset by -128) as 0/1 per dimension."""
    return np.unpackbits(packed.view(np.uint8) ^ 0x80, axis=-1)[:, :dim].astype(np.float64)


def hamming(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """The Hamming distance between each query's and each document's packed bits (binary or ubinary codes)."""
    q = np.unpackbits(queries.view(np.uint8), axis=-1).astype(np.int64)
    d = np.unpackbits(docs.view(np.uint8), axis=-1).astype(np.int64)
    return q @ (1 - d).T + (1 - q) @ d.T


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
