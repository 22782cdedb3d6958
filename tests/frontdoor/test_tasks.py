"""The door's task routes against the real server: rerank as Cohere's and Jina's clients send it, classify as
Infinity's, sparse vectors as TEI's, through plain HTTP (httpx), with the SDK's answers (which the SDK's tests
compare to sentence-transformers) as the reference, and the hostile input a shared service gets.

Every exchange is also checked against the door's own OpenAPI document (test_openai_app.py's `Conformance`), by the
`http` client of conftest.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest


from ..conftest import CLASSIFY_NAME, DEFAULT_NAME, RERANK_NAME, SPARSE_NAME
from ..corpus import sentences
from .conftest import internals

QUERY = "How do I stop a server?"
DOCUMENTS = sentences(12)
TEXTS = sentences(5)
_RANK = {"model": RERANK_NAME, "query": QUERY, "documents": DOCUMENTS[:3]}


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("path, documents, options", [
    ("/v1/rerank", DOCUMENTS, {"top_n": 3, "return_documents": True}),  # Cohere's client
    ("/rerank", [{"text": d} for d in DOCUMENTS], {"top_n": 50}),  # Jina's: documents as objects; top_n past the end
    ("/v1/rerank", DOCUMENTS, {}),
], ids=["cohere", "jina", "plain"])
def test_rerank_bodies_get_the_sdks_ranking(http, sdks, path, documents, options):
    body = _ok(http.post(path, json={"model": RERANK_NAME, "query": QUERY, "documents": documents, **options}))
    everything = sdks[RERANK_NAME].rerank(QUERY, DOCUMENTS)
    want = everything[:options.get("top_n")]
    assert body["model"] == RERANK_NAME and isinstance(body["id"], str) and body["id"]
    assert [r["index"] for r in body["results"]] == [r.index for r in want]
    scores = np.array([r["relevance_score"] for r in body["results"]])
    assert np.abs(scores - [r.score for r in want]).max() <= 1e-6
    assert ((0 <= scores) & (scores <= 1)).all() and (np.diff(scores) <= 0).all()
    if options.get("return_documents"):
        assert [r["document"] for r in body["results"]] == [{"text": r.document} for r in want]
    else:
        assert not any("document" in r for r in body["results"])
    # Every pair the model read counts, the ones top_n leaves out included.
    assert body["usage"] == {"total_tokens": sum(r.token_count for r in everything)}


def _assert_same_labels(body: Any, want: list) -> None:
    """The door's rows are the SDK's classifications: every label with the same score, best first (labels whose
    scores tie to float precision may come in either order, so the order is checked by score)."""
    assert len(body["data"]) == len(want)
    for row, classified in zip(body["data"], want):
        scores = [label["score"] for label in row]
        assert scores == sorted(scores, reverse=True)
        assert {label["label"]: label["score"] for label in row} == pytest.approx(
            {label.label: label.score for label in classified.labels}, abs=1e-6)


@pytest.mark.parametrize("raw_scores", [False, True])
def test_classify_body_gets_the_sdks_labels(http, sdks, raw_scores):
    body = _ok(http.post("/v1/classify", json={"model": CLASSIFY_NAME, "input": TEXTS, "raw_scores": raw_scores}))
    want = sdks[CLASSIFY_NAME].classify(TEXTS, raw_scores=raw_scores)
    assert (body["object"], body["model"]) == ("classify", CLASSIFY_NAME)
    _assert_same_labels(body, want)
    tokens = sum(c.token_count for c in want)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    one = _ok(http.post("/v1/classify", json={"model": CLASSIFY_NAME, "input": TEXTS[0], "raw_scores": raw_scores}))
    _assert_same_labels(one, sdks[CLASSIFY_NAME].classify(TEXTS[:1], raw_scores=raw_scores))


def test_embed_sparse_body_gets_the_sdks_vectors(http, sdks):
    want = sdks[SPARSE_NAME].encode_sparse(TEXTS)
    named = _ok(http.post("/embed_sparse", json={"inputs": TEXTS, "model": SPARSE_NAME}))
    assert _ok(http.post("/embed_sparse", json={"inputs": TEXTS})) == named  # the one sparse model served
    assert len(named) == len(want)
    for row, vector in zip(named, want):
        assert [entry["index"] for entry in row] == vector.indices.tolist()
        assert np.abs(np.array([entry["value"] for entry in row]) - vector.values).max() <= 1e-6
        assert all(entry["value"] > 0 for entry in row)
    assert _ok(http.post("/embed_sparse", json={"inputs": TEXTS[0]})) == named[:1]


def test_models_say_each_models_task_and_health_probes_them_all(http):
    tasks = {model["id"]: model["task"] for model in _ok(http.get("/v1/models"))["data"]}
    assert {DEFAULT_NAME: "embed", RERANK_NAME: "rerank", CLASSIFY_NAME: "classify",
            SPARSE_NAME: "sparse"}.items() <= tasks.items()
    assert _ok(http.get("/health")) == {"status": "ready"}


@pytest.mark.parametrize("path, body, task, route", [
    ("/v1/embeddings", {"model": RERANK_NAME, "input": "x"}, "rerank", "POST /v1/rerank"),
    ("/v1/rerank", {"model": DEFAULT_NAME, "query": "q", "documents": ["d"]}, "embed", "POST /v1/embeddings"),
    ("/v1/classify", {"model": SPARSE_NAME, "input": "x"}, "sparse", "POST /embed_sparse"),
    ("/embed_sparse", {"model": CLASSIFY_NAME, "inputs": "x"}, "classify", "POST /v1/classify"),
], ids=["rerank to embeddings", "embed to rerank", "sparse to classify", "classify to sparse"])
def test_a_model_of_another_task_is_400_naming_its_task(http, path, body, task, route):
    response = http.post(path, json=body)
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["param"]) == (400, "wrong_task", "model")
    assert f"is a {task} model; send it to {route}" in error["message"]


_MB10 = "word " * (2 << 20)  # 10 MB of text


@pytest.mark.parametrize("path, body, status, code, param", [
    ("/v1/rerank", {**_RANK, "query": ""}, 400, "empty_input", "query"),
    ("/v1/rerank", {**_RANK, "query": " \n"}, 400, "empty_input", "query"),
    ("/v1/rerank", {**_RANK, "documents": []}, 400, "empty_input", "documents"),
    ("/v1/rerank", {**_RANK, "documents": ["fine", ""]}, 400, "empty_input", "documents"),
    ("/v1/rerank", {**_RANK, "documents": ["d"] * 10_000}, 400, "too_many_documents", "documents"),
    ("/v1/rerank", {**_RANK, "documents": ["fine", _MB10]}, 400, "input_too_long", "documents"),
    ("/v1/rerank", {**_RANK, "query": _MB10}, 400, "input_too_long", "query"),
    ("/v1/rerank", {**_RANK, "top_n": 0}, 400, "invalid_value", "top_n"),
    ("/v1/rerank", {**_RANK, "top_n": -1}, 400, "invalid_value", "top_n"),
    ("/v1/rerank", {**_RANK, "top_n": 1.5}, 422, "invalid_type", "top_n"),
    ("/v1/rerank", {**_RANK, "top_n": "3"}, 422, "invalid_type", "top_n"),
    ("/v1/rerank", {**_RANK, "query": ["q"]}, 422, "invalid_type", "query"),
    ("/v1/rerank", {**_RANK, "documents": "d"}, 422, "invalid_type", "documents"),
    ("/v1/rerank", {**_RANK, "documents": [["d"]]}, 422, "invalid_type", "documents"),
    ("/v1/rerank", {**_RANK, "documents": [{"title": "d"}]}, 422, "invalid_type", "documents"),
    ("/v1/rerank", {**_RANK, "return_documents": 1}, 422, "invalid_type", "return_documents"),
    ("/v1/rerank", {**_RANK, "model": None}, 422, "missing", "model"),
    ("/v1/rerank", {**_RANK, "model": "no-such-model"}, 404, "model_not_found", "model"),
    ("/v1/rerank", {**_RANK, "rank_fields": ["title"]}, 400, "unsupported_parameter", "rank_fields"),
    ("/v1/classify", {"model": CLASSIFY_NAME, "input": []}, 400, "empty_input", "input"),
    ("/v1/classify", {"model": CLASSIFY_NAME, "input": [101, 102]}, 400, "token_ids_unsupported", "input"),
    ("/v1/classify", {"model": CLASSIFY_NAME, "input": _MB10}, 400, "input_too_long", "input"),
    ("/v1/classify", {"model": CLASSIFY_NAME, "input": "x", "raw_scores": "no"}, 422, "invalid_type", "raw_scores"),
    ("/embed_sparse", {"inputs": ["x"] * 2049}, 400, "too_many_inputs", "inputs"),
    ("/embed_sparse", {"inputs": {"text": "x"}}, 422, "invalid_type", "inputs"),
    ("/embed_sparse", {"inputs": ["x"], "model": "no-such-model"}, 404, "model_not_found", "model"),
], ids=["empty query", "blank query", "no documents", "empty document", "10,000 documents", "10 MB document",
        "10 MB query", "top_n 0", "top_n -1", "top_n 1.5", "top_n string", "query list", "documents string",
        "document list", "document without text", "return_documents 1", "model null", "unknown model",
        "rank_fields", "classify empty", "classify token ids", "classify 10 MB", "raw_scores string",
        "sparse 2049", "sparse object", "sparse unknown model"])
def test_hostile_input_is_a_clear_4xx_and_the_door_keeps_serving(http, server, path, body, status, code, param):
    response = http.post(path, json=body)
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["param"]) == (status, code, param), error
    assert error["type"] == "invalid_request_error" and error["message"]
    assert not [word for word in internals(server) if word in response.text], response.text
    assert len(_ok(http.post("/v1/rerank", json=_RANK))["results"]) == 3


def test_not_json_and_a_missing_key_are_refused_on_every_task_route(http):
    for path in ("/v1/rerank", "/rerank", "/v1/classify", "/embed_sparse"):
        broken = http.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert (broken.status_code, broken.json()["error"]["code"]) == (400, "invalid_json")
        keyless = http.post(path, json=_RANK, headers={"Authorization": ""})
        assert (keyless.status_code, keyless.json()["error"]["code"]) == (401, "invalid_api_key")


def test_over_long_pairs_are_truncated_and_counted_in_a_header(http, sdks):
    long = " ".join(DOCUMENTS) * 4  # past any test model's max_seq_len, far under what the door refuses
    response = http.post("/v1/rerank", json={**_RANK, "documents": [long, DOCUMENTS[0]]})
    assert response.status_code == 200 and response.headers["bertserve-truncated-inputs"] == "1"
    assert json.loads(response.text)["usage"]["total_tokens"] == sum(
        r.token_count for r in sdks[RERANK_NAME].rerank(QUERY, [long, DOCUMENTS[0]]))
