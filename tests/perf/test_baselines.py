"""The in-process baselines of `make bench` compute the vectors sentence-transformers computes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from perf.baselines import FastEmbedBaseline, OpenVinoBaseline, SentenceTransformersBaseline
from perf.bench import OPENVINO

from ..corpus import sentences

pytestmark = pytest.mark.server  # exports real weights inline


@pytest.fixture(scope="module")
def st(minilm_dir: Path) -> SentenceTransformersBaseline:
    return SentenceTransformersBaseline(minilm_dir)


@pytest.fixture(scope="module")
def st32(st: SentenceTransformersBaseline) -> np.ndarray:
    """sentence-transformers' vectors of the first 32 corpus sentences, which every OpenVINO hint is checked on."""
    return st.encode(sentences()[:32])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_fastembed_loads_a_folder_made_from_the_local_weights_and_matches(minilm_dir, tmp_path, st):
    corpus = sentences()[::6]  # short and long, some over the 256 tokens both truncate at
    fastembed = FastEmbedBaseline(minilm_dir, tmp_path / "fastembed")
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"} <= {
        path.name for path in (tmp_path / "fastembed").iterdir()}
    assert _cosines(fastembed.encode(corpus), st.encode(corpus)).min() >= 0.9999
    # The timing loop's call counts what it encoded (the vectors above are the same call's).
    assert fastembed.encoder(corpus[:3])() == 3 and fastembed.encoder(corpus[:1])() == 1


def test_bf16_autocast_changes_the_arithmetic_not_the_vectors(minilm_dir, st):
    corpus = sentences()[:16]
    bf16 = SentenceTransformersBaseline(minilm_dir, bf16_autocast=True)
    assert bf16.name == "sentence-transformers (in-process, bf16 autocast)"
    cosines = _cosines(bf16.encode(corpus), st.encode(corpus))
    assert cosines.min() >= 0.99 and cosines.min() < 0.999999  # bf16 rounding shows, and stays small


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_openvino_runs_the_exported_graph(variants_repository, st32, hint):
    corpus = sentences()[:32]
    baseline = OpenVinoBaseline(variants_repository / f"{OPENVINO}_encoder",
                                variants_repository / f"{OPENVINO}_tokenizer" / "1" / "tokenizer.json", hint)
    assert f"{hint.lower()} hint" in baseline.name
    # The throughput hint gives each core a stream, over which every batch is split.
    assert baseline.streams == 1 if hint == "LATENCY" else (baseline.streams > 1 or os.cpu_count() == 1)
    vectors = baseline.encode(corpus)
    assert vectors.shape == (32, 384)
    cosines = _cosines(vectors, st32)
    assert cosines.min() >= (0.9999 if baseline.precision == "f32" else 0.99)
    # Fewer sentences than streams, and the timing loop's count.
    assert baseline.encode(corpus[:1]).shape == (1, 384) and baseline.encoder(corpus[:3])() == 3
