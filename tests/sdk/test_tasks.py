"""Rerank, classify and sparse vectors through the SDK against a real tritonserver, over gRPC and HTTP, checked
against sentence-transformers' CrossEncoder and SparseEncoder on the same folders; calls of the wrong task and bad
arguments refused before any request."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from bertserve import Encoder, TruncationWarning
from bertserve.errors import InvalidInputError

from ..conftest import CLASSIFY_LABELS, CLASSIFY_NAME, DEFAULT_NAME, RERANK_NAME, SPARSE_NAME
from ..corpus import sentences

CORPUS = sentences(300)
QUERY = CORPUS[0]
LONG = " ".join(CORPUS[:12])  # past every task model's max_seq_len (128 at most), alone or in a pair
# A long document, and CORPUS[3] twice (positions 2 and 25): equal scores, ranked by position.
DOCUMENTS = CORPUS[1:25] + [LONG, CORPUS[3]]
TEXTS = CORPUS[30:50] + [LONG]
TOLERANCE = 1e-4


@pytest.fixture(params=["grpc", "http"])
def protocol(request) -> str:
    return request.param


def _encoder(server, protocol: str, model: str, **options: Any) -> Encoder:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return Encoder(url, protocol=protocol, model=model, **options)


@pytest.fixture(scope="module")
def cross_encoder(rerank_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(rerank_dir), device="cpu")


@pytest.fixture(scope="module")
def classifier(classify_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(classify_dir), device="cpu")


@pytest.fixture(scope="module")
def sparse_encoder(sparse_dir):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(sparse_dir), device="cpu")


def _by_index(ranked: list) -> np.ndarray:
    """A rerank's scores in the documents' order."""
    scores = np.full(len(ranked), np.nan)
    for r in ranked:
        scores[r.index] = r.score
    return scores


def _best_first(ranked: list) -> None:
    """Scores never rise down the list; equal scores keep the documents' order."""
    for a, b in zip(ranked, ranked[1:]):
        assert a.score > b.score or (a.score == b.score and a.index < b.index), (a, b)


def _token_counts(tokenizer, items: list[Any], max_seq_len: int) -> tuple[list[int], list[bool]]:
    """What the model sees of each item (a text or a pair), as the reference's own tokenizer cuts it: tokens after
    truncation, and whether it was cut."""
    full = [len(tokenizer(*(item if isinstance(item, tuple) else (item,)))["input_ids"]) for item in items]
    seen = [len(tokenizer(*(item if isinstance(item, tuple) else (item,)), truncation="longest_first",
                          max_length=max_seq_len)["input_ids"]) for item in items]
    return seen, [n > max_seq_len for n in full]


def _dense(vector, width: int) -> np.ndarray:
    dense = np.zeros(width, np.float32)
    dense[vector.indices] = vector.values
    return dense


# -- numerics against sentence-transformers ------------------------------------------------------------------------


@pytest.mark.parametrize("query", [QUERY, LONG], ids=["query", "long-query"])
def test_rerank_matches_cross_encoder(server, protocol, cross_encoder, query):
    import torch

    pairs = [(query, document) for document in DOCUMENTS]
    want = cross_encoder.predict(pairs)
    want_logits = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity())
    with _encoder(server, protocol, RERANK_NAME) as enc, pytest.warns(TruncationWarning, match="max_seq_len of 32"):
        ranked = enc.rerank(query, DOCUMENTS)
        raw = enc.rerank(query, DOCUMENTS, raw_scores=True)
    assert sorted(r.index for r in ranked) == list(range(len(DOCUMENTS)))
    assert all(r.document is DOCUMENTS[r.index] for r in ranked)
    assert np.abs(_by_index(ranked) - want).max() <= TOLERANCE
    assert np.abs(_by_index(raw) - want_logits).max() <= TOLERANCE
    _best_first(ranked)
    _best_first(raw)
    # The duplicate: equal scores, the earlier document first.
    ties = [r.index for r in ranked if r.document == CORPUS[3]]
    assert ties == [2, 25]
    by_index = sorted(ranked, key=lambda r: r.index)
    seen, truncated = _token_counts(cross_encoder.tokenizer, pairs, cross_encoder.max_seq_length)
    assert [(r.token_count, r.truncated) for r in by_index] == list(zip(seen, truncated))
    assert truncated[24] and (query is LONG or not all(truncated))


def test_classify_matches_cross_encoder(server, protocol, classifier):
    import torch

    items: list[Any] = TEXTS + [(CORPUS[60], CORPUS[61]), (LONG, CORPUS[62])]  # sentence pairs too
    want = np.stack([classifier.predict(item, apply_softmax=True) for item in items])
    want_logits = np.stack([classifier.predict(item, activation_fn=torch.nn.Identity()) for item in items])
    with _encoder(server, protocol, CLASSIFY_NAME) as enc, pytest.warns(TruncationWarning, match="max_seq_len of 128"):
        info = enc.info()
        classified = enc.classify(items)
        raw = enc.classify(items, raw_scores=True)
    assert (info.task, info.labels, info.dim) == ("classify", CLASSIFY_LABELS, len(CLASSIFY_LABELS))
    assert len(classified) == len(raw) == len(items)
    for got, logits, expected, expected_logits in zip(classified, raw, want, want_logits):
        for result, reference in ((got, expected), (logits, expected_logits)):
            assert sorted(label.label for label in result.labels) == sorted(CLASSIFY_LABELS)
            scores = {label.label: label.score for label in result.labels}
            assert np.abs(np.array([scores[name] for name in CLASSIFY_LABELS]) - reference).max() <= TOLERANCE
            assert [label.score for label in result.labels] == sorted(scores.values(), reverse=True)
        assert got.label == CLASSIFY_LABELS[int(np.argmax(expected))]
    seen, truncated = _token_counts(classifier.tokenizer, items, info.max_seq_len)
    assert [(c.token_count, c.truncated) for c in classified] == list(zip(seen, truncated))
    assert truncated[20] and not all(truncated)


def test_sparse_matches_sparse_encoder(server, protocol, sparse_encoder):
    want = sparse_encoder.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    with _encoder(server, protocol, SPARSE_NAME) as enc, pytest.warns(TruncationWarning, match="max_seq_len of 32"):
        vectors = enc.encode_sparse(TEXTS)
        max_seq_len = enc.info().max_seq_len
    assert len(vectors) == len(TEXTS)
    assert len({len(v.indices) for v in vectors}) > 1, "every vector as long: padding would not show"
    for vector, expected in zip(vectors, want):
        assert vector.indices.dtype == np.int64 and vector.values.dtype == np.float32
        assert np.array_equal(vector.indices, np.flatnonzero(expected))  # ascending, the same non-zero set
        assert np.abs(_dense(vector, len(expected)) - expected).max() <= TOLERANCE
        assert vector.terms is None
    seen, truncated = _token_counts(sparse_encoder.tokenizer, TEXTS, max_seq_len)
    assert [(v.token_count, v.truncated) for v in vectors] == list(zip(seen, truncated))
    assert truncated[-1] and not all(truncated)


def test_sparse_terms_are_the_vocabulary_tokens_of_the_indices(server, protocol, sparse_encoder):
    texts = TEXTS[:8]
    want = sparse_encoder.decode(sparse_encoder.encode(texts, convert_to_tensor=True))  # [(token, weight)] per text
    with _encoder(server, protocol, SPARSE_NAME) as enc:
        plain = enc.encode_sparse(texts)
        named = enc.encode_sparse(texts, terms=True)
    for without, vector, expected in zip(plain, named, want):
        assert vector.terms == sparse_encoder.tokenizer.convert_ids_to_tokens(vector.indices.tolist())
        assert np.array_equal(vector.indices, without.indices)
        assert np.abs(vector.values - without.values).max() <= 1e-6
        view = vector.as_dict()
        assert sorted(view) == sorted(token for token, _ in expected)
        assert max(abs(view[token] - weight) for token, weight in expected) <= TOLERANCE
        with pytest.raises(InvalidInputError, match=r"encode_sparse\(texts, terms=True\)"):
            without.as_dict()


# -- many items: split into requests, put back in order -------------------------------------------------------------


def _rerank(enc: Encoder, items: list[str]) -> np.ndarray:
    ranked = enc.rerank(QUERY, items)
    _best_first(ranked)
    return _by_index(ranked)


def _classify(enc: Encoder, items: list[str]) -> np.ndarray:
    return np.array([[{x.label: x.score for x in c.labels}[name] for name in CLASSIFY_LABELS]
                     for c in enc.classify(items)])


def _sparse(enc: Encoder, items: list[str]) -> np.ndarray:
    return np.stack([_dense(v, enc.info().dim) for v in enc.encode_sparse(items)])


@pytest.mark.parametrize("model, run", [(RERANK_NAME, _rerank), (CLASSIFY_NAME, _classify), (SPARSE_NAME, _sparse)],
                         ids=["rerank", "classify", "sparse"])
def test_more_items_than_a_request_holds_come_back_whole_and_in_order(server, model, run):
    # 300 items in requests of at most 64 (the sparse model's batch size is smaller), 4 in flight, against one
    # request per item: any item lost, doubled or moved shows as a mismatch.
    with _encoder(server, "grpc", model, batch_size=64) as split, \
            _encoder(server, "grpc", model, batch_size=1, concurrency=8) as single:
        got, want = run(split, CORPUS), run(single, CORPUS)
        size = min(64, split.info().max_batch_size)
        assert split.status().requests == -(-len(CORPUS) // size) > 1
        assert single.status().requests == len(CORPUS)
    assert got.shape == want.shape and len(got) == len(CORPUS)
    assert np.abs(got - want).max() <= 1e-5


def test_top_n_keeps_the_best_and_never_more_than_there_are(server):
    with _encoder(server, "grpc", RERANK_NAME, batch_size=64) as enc:
        everything = enc.rerank(QUERY, CORPUS)
        top = enc.rerank(QUERY, CORPUS, top_n=5)
        one = enc.rerank(QUERY, CORPUS[:3], top_n=1)
        beyond = enc.rerank(QUERY, CORPUS[:3], top_n=50)
    scores = _by_index(everything)
    assert len(top) == 5 and len(one) == 1 and len(beyond) == 3
    _best_first(top)
    assert all(abs(r.score - scores[r.index]) <= 1e-5 for r in top)
    rest = np.delete(scores, [r.index for r in top])
    assert top[-1].score >= rest.max() - 1e-5  # nothing left out scores above the last one kept
    assert sorted(r.index for r in beyond) == [0, 1, 2]
    assert one[0].index == beyond[0].index


@pytest.mark.parametrize("model, call", [
    (RERANK_NAME, lambda enc: enc.rerank(QUERY, [CORPUS[1], LONG], truncate=False)),
    (CLASSIFY_NAME, lambda enc: enc.classify([CORPUS[1], LONG], truncate=False)),
    (SPARSE_NAME, lambda enc: enc.encode_sparse([CORPUS[1], LONG], truncate=False)),
], ids=["rerank", "classify", "sparse"])
def test_truncate_false_refuses_input_past_max_seq_len(server, model, call):
    with _encoder(server, "grpc", model) as enc, pytest.raises(
            InvalidInputError, match=r"1 input\(s\) longer than the model's max_seq_len .*item 1.*truncate=True"):
        call(enc)


# -- the wrong task, bad arguments: refused before any request ----------------------------------------------------

_CALLS: dict[str, tuple[str, Callable[[Encoder], Any]]] = {
    "encode": ("embed", lambda enc: enc.encode(["hello"])),
    "encode_detailed": ("embed", lambda enc: enc.encode_detailed(["hello"])),
    "encode_stream": ("embed", lambda enc: list(enc.encode_stream(["hello"]))),
    "rerank": ("rerank", lambda enc: enc.rerank("hello", ["world"])),
    "classify": ("classify", lambda enc: enc.classify(["hello"])),
    "encode_sparse": ("sparse", lambda enc: enc.encode_sparse(["hello"])),
}
_MODELS = {DEFAULT_NAME: ("embed", "encode"), RERANK_NAME: ("rerank", "rerank"), CLASSIFY_NAME: ("classify", "classify"),
           SPARSE_NAME: ("sparse", "encode_sparse")}


@pytest.mark.parametrize("model, call", [(m, c) for m, (task, _) in _MODELS.items()
                                         for c, (wanted, _) in _CALLS.items() if wanted != task])
def test_a_call_for_another_task_names_the_models_task_and_the_call_to_use(server, model, call):
    task, use = _MODELS[model]
    wanted, run = _CALLS[call]
    with _encoder(server, "http", model) as enc:
        with pytest.raises(InvalidInputError, match=rf"model '{model}' is a {task} model and {call}\(\) is for "
                                                    rf"{wanted} models: call {use}\("):
            run(enc)
        assert enc.status().requests == 0


# An address nothing listens on, and no retries: a call that sent anything would fail with ServerUnavailableError.
_NOWHERE = "grpc://127.0.0.1:1"


@pytest.mark.parametrize("call, message", [
    (lambda enc: enc.rerank("", ["a"]), "the query is an empty string"),
    (lambda enc: enc.rerank("  ", ["a"]), "the query is an empty string"),
    (lambda enc: enc.rerank(3, ["a"]), "the query is int, not str"),
    (lambda enc: enc.rerank(None, ["a"]), "the query is NoneType, not str"),
    (lambda enc: enc.rerank("q", []), r"rerank\(\) got an empty list of documents"),
    (lambda enc: enc.rerank("q", "a document"), r"wrap a single document in a list: rerank\(query, \[document\]\)"),
    (lambda enc: enc.rerank("q", 3), r"rerank\(\) takes a list of documents, got int"),
    (lambda enc: enc.rerank("q", ["a", 3]), "document 1 is int, not str"),
    (lambda enc: enc.rerank("q", ["a", ""]), "document 1 is an empty string"),
    (lambda enc: enc.rerank("q", ["a", ("b", "c")]), "document 1 is tuple, not str"),
    (lambda enc: enc.rerank("q", ["a"], top_n=0), r"top_n must be a whole number of at least 1 \(or None for all\), got 0"),
    (lambda enc: enc.rerank("q", ["a"], top_n=-1), "top_n must be .* got -1"),
    (lambda enc: enc.rerank("q", ["a"], top_n=1.5), "top_n must be .* got 1.5"),
    (lambda enc: enc.rerank("q", ["a"], top_n="3"), "top_n must be .* got '3'"),
    (lambda enc: enc.rerank("q", ["a"], top_n=True), "top_n must be .* got True"),
    (lambda enc: enc.rerank("q", ["a"], raw_scores="false"), "raw_scores must be True or False, got 'false'"),
    (lambda enc: enc.rerank("q", ["a"], truncate=None), "truncate must be True or False, got None"),
    (lambda enc: enc.classify([]), r"classify\(\) got an empty list of strings"),
    (lambda enc: enc.classify("a text"), r"wrap a single string in a list: classify\(\[text\]\)"),
    (lambda enc: enc.classify(["a", None]), "item 1 is NoneType, not str"),
    (lambda enc: enc.classify(["a", ("b",)]), "item 1 is a tuple of 1; a pair has exactly 2"),
    (lambda enc: enc.classify(["a"], raw_scores=1), "raw_scores must be True or False, got 1"),
    (lambda enc: enc.encode_sparse([]), r"encode_sparse\(\) got an empty list of strings"),
    (lambda enc: enc.encode_sparse(["a", ("b", "c")]), "item 1 is tuple, not str"),
    (lambda enc: enc.encode_sparse(["a", b"b"]), "item 1 is bytes, not str"),
    (lambda enc: enc.encode_sparse(["\ud800"]), "item 0 cannot be encoded as UTF-8"),
    (lambda enc: enc.encode_sparse(["a"], terms="yes"), "terms must be True or False, got 'yes'"),
])
def test_bad_arguments_are_refused_before_any_request(call, message):
    with Encoder(_NOWHERE, model=RERANK_NAME, retries=0) as enc:
        with pytest.raises(InvalidInputError, match=message):
            call(enc)
        assert enc.status().requests == enc.status().failures == 0
