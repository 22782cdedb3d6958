"""Encoding through the SDK against a real tritonserver, over gRPC and HTTP."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bertserve import Encoder
from bertserve.errors import ModelNotFoundError

from ..conftest import CLASSIFY_NAME, DEFAULT_NAME, RERANK_NAME, SPARSE_NAME, STREAM_NAME, TOKENS_NAME
from ..corpus import sentences

CORPUS = sentences(240)


@pytest.fixture(scope="module")
def sentence_transformers_vectors(minilm_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(CORPUS, batch_size=32, convert_to_numpy=True)


@pytest.fixture(params=["grpc", "http"])
def encoder(request, server):
    url = server.grpc_url if request.param == "grpc" else server.http_url
    with Encoder(url, protocol=request.param, model=DEFAULT_NAME) as enc:
        yield enc


def test_matches_sentence_transformers(encoder, sentence_transformers_vectors):
    vectors = encoder.encode(CORPUS)
    assert vectors.dtype == np.float32
    assert vectors.shape == sentence_transformers_vectors.shape == (240, 384)
    assert np.abs(vectors - sentence_transformers_vectors).max() <= 1e-4


def test_large_input_is_split_concurrently_and_keeps_order(server):
    # 240 inputs in requests of 7: 35 requests, 4 in flight; any reordering shows as a mismatch.
    with Encoder(server.grpc_url, model=STREAM_NAME) as whole, Encoder(
            server.grpc_url, model=STREAM_NAME, batch_size=7, concurrency=4) as split:
        want, vectors = whole.encode(CORPUS), split.encode(CORPUS)
        assert whole.status().requests == 1 and split.status().requests == 35
    assert np.abs(vectors - want).max() <= 1e-5


def test_info_reports_the_served_model(encoder):
    info = encoder.info()
    assert (info.name, info.dim, info.pooling, info.layers, info.normalize, info.max_seq_len) == (
        DEFAULT_NAME, 384, "mean", (-1,), True, 256)


def _exported(repository) -> list[str]:
    """The models exported into `repository`: the ensembles, which carry bertserve.json (their parts do not)."""
    return sorted(path.parent.name for path in repository.glob("*/bertserve.json"))


def test_models_lists_the_models_of_every_task_and_not_their_parts(encoder, repository):
    names = encoder.models()
    assert {DEFAULT_NAME, TOKENS_NAME, STREAM_NAME, RERANK_NAME, CLASSIFY_NAME, SPARSE_NAME} <= set(names)
    assert names == _exported(repository)


def test_model_must_be_named_when_several_are_served(server):
    with Encoder(server.grpc_url) as enc, pytest.raises(ModelNotFoundError, match="several models"):
        enc.encode(["hello"])


def test_unknown_model_names_what_to_do(server, repository):
    served = re.escape(str(_exported(repository)))
    with Encoder(server.grpc_url, model="nope") as enc, pytest.raises(
        ModelNotFoundError, match=f"does not serve a ready model 'nope'; it serves {served}$"
    ):
        enc.encode(["hello"])


def test_token_level_vectors_have_one_row_per_real_token(server, repository):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(repository / f"{TOKENS_NAME}_tokenizer" / "1" / "tokenizer.json"))
    texts = ["short", "a somewhat longer sentence here", "word " * 200]
    with Encoder(server.http_url, model=TOKENS_NAME) as enc:
        vectors = enc.encode(texts)
    with Encoder(server.http_url, model=DEFAULT_NAME) as enc:
        pooled = enc.encode(texts)
    lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(texts)]
    assert [v.shape for v in vectors] == [(n, 384) for n in lengths]
    assert lengths[-1] == 64
    # The default model is mean pooling + L2 norm over these same token vectors (for inputs under 64 tokens).
    for v, p in zip(vectors[:2], pooled[:2]):
        mean = v.mean(axis=0)
        assert np.abs(mean / np.linalg.norm(mean) - p).max() <= 1e-4


def test_encode_detailed_reports_tokens_counts_and_truncation(encoder):
    texts = ["hello world", "word " * 300, "a ||| b"]
    detailed = encoder.encode_detailed(texts, show_tokens=True)
    vectors, tokens = encoder.encode(texts, show_tokens=True)
    assert np.abs(detailed.vectors - vectors).max() == 0 and detailed.tokens == tokens
    assert detailed.token_counts.tolist() == [4, 302, 5]  # before truncation, [CLS]/[SEP] included
    assert detailed.truncated.tolist() == [False, True, False]
    assert detailed.tokens_seen == sum(len(t) for t in tokens) == 4 + 256 + 5
    assert encoder.encode_detailed(texts).tokens is None
