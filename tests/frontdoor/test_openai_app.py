"""The OpenAI door's Starlette app in process, through Starlette's `TestClient`, with fake `Models`.

Pure and fast: no Triton, no front-door process. The fakes stand for our own `Models` and SDK `Encoder`, so that
every failure the SDK can raise reaches the app: its status, OpenAI body, `retry-after`, and that no internal
address or path reaches the client. Every exchange is also checked against the app's own OpenAPI document
(`Conformance`), which test_openai.py does for the real door too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from functools import lru_cache
from typing import Any, Callable, Mapping, Optional

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from bertserve.client import Encoded
from bertserve.errors import (
    AuthenticationError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
    ServerUnavailableError,
)
from bertserve.frontdoor import FrontDoorConfig
from bertserve.frontdoor.models import PLAIN, EncodeOptions
from bertserve.frontdoor.openai import ROUTES as OPENAI_ROUTES
from bertserve.frontdoor.openai import TRUNCATED_HEADER, create_app
from bertserve.info import ModelInfo
from bertserve.results import Classified, Label, Ranked, SparseVector

KEY = "app-test-key-0123456789"
MODEL = "fake-model"
LIMIT = 1000  # max_request_bytes
# The address an SDK error names: none of it may reach a client.
INTERNAL = "grpc://10.9.8.7:18101"
INTERNALS = ("10.9.8.7", "18101", "grpc://", "/secret")
INFO = ModelInfo(name=MODEL, source="fake", dim=4, pooling="mean", layers=(-1,), normalize=True, max_seq_len=16,
                 max_batch_size=8)
RERANK, CLASSIFY, SPARSE = "fake-rerank", "fake-classify", "fake-sparse"
# The models of the other tasks, beside the embedding model.
INFOS = {MODEL: INFO,
         RERANK: replace(INFO, name=RERANK, task="rerank", dim=1, labels=("score",), pooling="cls_pooled",
                         normalize=False),
         CLASSIFY: replace(INFO, name=CLASSIFY, task="classify", dim=3, labels=("negative", "neutral", "positive"),
                           pooling="cls_pooled", normalize=False),
         SPARSE: replace(INFO, name=SPARSE, task="sparse", dim=30, pooling="max", normalize=False)}


class _FakeEncoder:
    """The SDK `Encoder` as the app uses it: `info()` and `encode_detailed()`, which raises `failure` if given and
    counts a text longer than max_seq_len characters as truncated."""

    def __init__(self, failure: Optional[Exception]) -> None:
        self.failure = failure

    def info(self) -> ModelInfo:
        return INFO

    def encode_detailed(self, texts: list[str]) -> Encoded:
        if self.failure is not None:
            raise self.failure
        n = len(texts)
        truncated = np.array([len(text) > INFO.max_seq_len for text in texts])  # a character a token
        return Encoded(vectors=np.full((n, INFO.dim), 0.5, np.float32), token_counts=np.full(n, 3),
                       truncated=truncated, tokens_seen=3 * n)


class _FakeModels:
    """`frontdoor.models.Models` without Triton: the models of `INFOS`, a fixed readiness answer. The task models
    answer as the SDK does: a rerank scores a document by its length (longer: better), a classification is the same
    for every text, a sparse vector has two weights."""

    def __init__(self, failure: Optional[Exception] = None, problem: Optional[str] = None) -> None:
        self._encoder, self._problem = _FakeEncoder(failure), problem

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    def encoder(self, name: Optional[str] = None) -> _FakeEncoder:
        if name != MODEL:
            raise ModelNotFoundError(f"no model {name!r} is served here; GET /v1/models lists them")
        return self._encoder

    async def info(self, name: str) -> ModelInfo:
        if name not in INFOS:
            raise ModelNotFoundError(f"no model {name!r} is served here; GET /v1/models lists them")
        return INFOS[name]

    async def encode(self, name: str, texts: list[str], options: EncodeOptions = PLAIN) -> Encoded:
        assert options == PLAIN, "the fake encodes plain requests only: options are tested on the real door"
        return self.encoder(name).encode_detailed(texts)

    async def rerank(self, name: str, query: str, documents: list[str]) -> list[Ranked]:
        ranked = [Ranked(i, len(d) / (len(d) + 1), d, 3, len(query) + len(d) > INFO.max_seq_len)
                  for i, d in enumerate(documents)]
        return sorted(ranked, key=lambda r: -r.score)

    async def classify(self, name: str, texts: list[str], raw_scores: bool) -> list[Classified]:
        scores = (2.0, 0.5, -1.0) if raw_scores else (0.75, 0.2, 0.05)
        labels = [Label(label, score) for label, score in zip(("positive", "neutral", "negative"), scores)]
        return [Classified(labels, 3, len(text) > INFO.max_seq_len) for text in texts]

    async def encode_sparse(self, name: str, texts: list[str]) -> list[SparseVector]:
        return [SparseVector(np.array([1, 5]), np.array([0.5, 0.25], np.float32), 3, len(text) > INFO.max_seq_len)
                for text in texts]

    def names(self) -> list[str]:
        return list(INFOS)

    def problem(self) -> Optional[str]:
        return self._problem


def _client(failure: Optional[Exception] = None, problem: Optional[str] = None, key: Optional[str] = KEY,
            **options: Any) -> TestClient:
    """A client of the app in front of fake models; every answer it gets is checked against the app's document.
    `options` are more of the door's `FrontDoorConfig`."""
    config = FrontDoorConfig(triton_url=INTERNAL.removeprefix("grpc://"), host="127.0.0.1", openai_port=1,
                             api_key=key, max_request_bytes=LIMIT, **options)
    # Unforeseen exceptions are answered by the app and then re-raised to the server, as Starlette does; the
    # client here sees what a real client would, the answer.
    client = TestClient(create_app(config, _FakeModels(failure, problem)), raise_server_exceptions=False,
                        headers={"Authorization": f"Bearer {key}"} if key else None)
    client.event_hooks = {"response": [_conformance(client.get("/openapi.json").content).hook]}
    return client


@lru_cache(maxsize=None)
def _conformance(document: bytes) -> Conformance:
    """One checker per document: its validators are built once for all the clients of apps alike."""
    return Conformance(json.loads(document))


class Conformance:
    """A door's OpenAPI document, against which each exchange with the door is checked."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._validators: dict[str, Draft202012Validator] = {}

    def hook(self, response: httpx.Response) -> None:
        """`check` as an httpx response hook: every exchange of the client that has it is checked."""
        request = response.request
        self.check(request.method, request.url.path, response.status_code, request.content, response.read(),
                   response.headers)

    def check(self, method: str, path: str, status: int, request: Optional[bytes], answer: bytes,
              headers: Optional[Mapping[str, str]] = None) -> None:
        """Assert that the exchange is as the document says: a listed status, a body and our headers as listed
        for it; and a request body the schema accepts if it got a 200, refuses if it got a 422."""
        operation = self.document["paths"].get(path, {}).get(method.lower())
        if operation is None:  # a route or method the door does not have: an error body all the same
            self._assert_valid({"$ref": "#/components/schemas/ErrorResponse"}, answer, f"{status} answer")
            return
        assert str(status) in operation["responses"], (
            f"{method} {path} answered {status}; its document lists {sorted(operation['responses'])}")
        listed = operation["responses"][str(status)]
        ((media_type, content),) = listed["content"].items()
        if media_type == "application/json":
            self._assert_valid(content["schema"], answer, f"{status} answer of {method} {path}")
        assert {"retry-after", TRUNCATED_HEADER} & set(headers or {}) <= set(listed.get("headers", {})), headers
        if "requestBody" in operation and status in (200, 422):
            errors = self.errors(operation["requestBody"]["content"]["application/json"]["schema"],
                                 json.loads(request or b"null"))
            assert (status == 200) == (not errors), (
                f"{method} {path} answered {status} to {request!r:.300}, which its request schema "
                f"{'refuses: ' + errors[0] if errors else 'accepts'}")

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        """Why `instance` does not match `schema` (which may point into the document's components)."""
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            components = {"components": self.document["components"]}  # what the schema's "$ref"s point into
            validator = self._validators[key] = Draft202012Validator({**schema, **components})
        return [f"/{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in
                validator.iter_errors(instance)]

    def _assert_valid(self, schema: dict[str, Any], answer: bytes, what: str) -> None:
        errors = self.errors(schema, json.loads(answer))
        assert not errors, f"the {what} does not match its schema: {errors[0]}; {answer!r:.300}"


def _embed(client: TestClient, **body: Any):
    return client.post("/v1/embeddings", json={"model": MODEL, "input": ["hello"], **body})


def _error(response) -> dict[str, Any]:
    assert not any(internal in response.text for internal in INTERNALS), response.text
    return response.json()["error"]


def test_the_fakes_encode():
    response = _embed(_client())
    assert response.status_code == 200 and response.json()["data"][0]["embedding"] == [0.5] * 4


def test_truncated_inputs_are_counted_in_a_header():
    response = _embed(_client(), input=["x" * (INFO.max_seq_len + 1), "short", "y" * 40])
    assert response.status_code == 200 and response.headers[TRUNCATED_HEADER] == "2"
    assert TRUNCATED_HEADER not in _embed(_client()).headers


@pytest.mark.parametrize("failure, status, kind, code, retry_after", [
    (ServerBusyError(f"{INTERNAL} is at capacity and turned the request away"), 429, "rate_limit_error", "busy", "1"),
    (ServerUnavailableError(f"could not reach a Triton server at {INTERNAL}"), 503, "server_error", "unavailable",
     "1"),
    (RequestTimeoutError(f"{INTERNAL} did not answer within the timeout"), 503, "server_error", "unavailable", "1"),
    (AuthenticationError(f"{INTERNAL} requires an API key"), 500, "server_error", None, None),
    (RuntimeError("/secret/path"), 500, "server_error", None, None),
    (ServerError(f"{INTERNAL} refused the request: boom", detail="refused the request: boom"), 500, "server_error",
     None, None),
    (ModelNotFoundError(f"{INTERNAL} does not serve a ready model"), 500, "server_error", None, None),
    (InvalidInputError(f"{INTERNAL} refused the input: in ensemble '{MODEL}', no token",
                       detail=f"refused the input: in ensemble '{MODEL}', no token"),
     400, "invalid_request_error", "invalid_input", None),
], ids=["busy", "unavailable", "timeout", "key refused", "unforeseen", "server error", "model gone", "input refused"])
def test_sdk_failures_map_to_openai_errors_without_internals(failure, status, kind, code, retry_after):
    response = _embed(_client(failure))
    error = _error(response)
    assert (response.status_code, error["type"], error["code"]) == (status, kind, code)
    assert response.headers.get("retry-after") == retry_after
    if isinstance(failure, InvalidInputError):  # the client's own mistake: it is told what Triton said
        assert (error["message"], error["param"]) == (failure.detail, "input")
    elif status == 500 and not isinstance(failure, AuthenticationError):
        assert error["message"] == "The server failed to encode the input"


def test_a_refused_key_is_logged_for_the_operator(caplog):
    with caplog.at_level(logging.ERROR, "bertserve.frontdoor"):
        response = _embed(_client(AuthenticationError(f"{INTERNAL} requires an API key")))
    assert response.status_code == 500 and "--api-key" in _error(response)["message"]
    assert [r.getMessage() for r in caplog.records] == [
        f"Triton refused the front door's key: {INTERNAL} requires an API key"]


def test_an_unforeseen_failure_is_logged_with_its_traceback(caplog):
    with caplog.at_level(logging.ERROR, "bertserve.frontdoor"):
        _embed(_client(RuntimeError("/secret/path")))
    (record,) = [r for r in caplog.records if r.name == "bertserve.frontdoor"]
    assert record.exc_info and str(record.exc_info[1]) == "/secret/path"


@pytest.mark.parametrize("body, param", [
    ({"user": 42}, "user"),
    ({"input": [True]}, "input"),
], ids=["non-string user", "input [true]"])
def test_wrong_types_are_422(body, param):
    response = _embed(_client(), **body)
    error = _error(response)
    assert (response.status_code, error["code"], error["param"]) == (422, "invalid_type", param)


def _chunked(size: int):
    """A JSON body of about `size` bytes in 100-byte chunks: sent chunked, with no Content-Length."""
    head, tail = b'{"model": "%s", "input": ["' % MODEL.encode(), b'"]}'
    text = b"x" * (size - len(head) - len(tail))
    yield head
    for start in range(0, len(text), 100):
        yield text[start:start + 100]
    yield tail


def test_a_chunked_body_over_the_limit_is_413():
    client = _client()
    under = client.post("/v1/embeddings", content=_chunked(LIMIT - 10))
    over = client.post("/v1/embeddings", content=_chunked(LIMIT + 10))
    for response in (under, over):
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
    assert under.status_code == 200
    assert (over.status_code, _error(over)["code"]) == (413, "request_too_large")


def test_unknown_routes_and_methods_get_openai_bodies():
    client = _client()
    missing, wrong = client.post("/v1/completions", json={}), client.get("/v1/embeddings")
    assert (missing.status_code, _error(missing)["code"], _error(missing)["type"]) == (404, "not_found",
                                                                                      "invalid_request_error")
    assert (wrong.status_code, _error(wrong)["code"], _error(wrong)["type"]) == (405, "method_not_allowed",
                                                                                "invalid_request_error")


def test_models_needs_the_key():
    client = _client()
    refused = client.get("/v1/models", headers={"Authorization": ""})
    assert (refused.status_code, _error(refused)["code"]) == (401, "invalid_api_key")
    listed = client.get("/v1/models")
    assert listed.status_code == 200 and {m["id"]: m["task"] for m in listed.json()["data"]} == {
        MODEL: "embed", RERANK: "rerank", CLASSIFY: "classify", SPARSE: "sparse"}


def test_health_needs_no_key_and_is_503_with_retry_after_when_not_ready():
    ready = _client().get("/health", headers={"Authorization": ""})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    down = _client(problem="the Triton server is not reachable").get("/health", headers={"Authorization": ""})
    assert (down.status_code, _error(down)["code"], down.headers["retry-after"]) == (503, "not_ready", "1")
    assert _error(down)["message"] == "not ready: the Triton server is not reachable"


def test_rerank_answers_best_first_keeps_top_n_and_counts_every_document():
    documents = ["a", "ccc", "bb", "x" * 20]
    response = _client().post("/v1/rerank", json={"model": RERANK, "query": "q", "documents": documents, "top_n": 2,
                                                  "return_documents": True})
    body = response.json()
    assert response.status_code == 200 and len(body["id"]) == 32 and body["model"] == RERANK
    assert [(r["index"], r["relevance_score"], r["document"]) for r in body["results"]] == [
        (3, 20 / 21, {"text": "x" * 20}), (1, 3 / 4, {"text": "ccc"})]
    assert body["usage"] == {"total_tokens": 3 * len(documents)}  # the documents top_n leaves out count too
    assert response.headers[TRUNCATED_HEADER] == "1"


def test_rerank_without_top_n_answers_every_document_without_its_text():
    response = _client().post("/rerank", json={"model": RERANK, "query": "q", "documents": [{"text": "a"}, "bb"]})
    assert [set(r) for r in response.json()["results"]] == [{"index", "relevance_score"}] * 2
    assert [r["index"] for r in response.json()["results"]] == [1, 0]


def test_classify_and_sparse_answer_in_their_shapes():
    client = _client()
    classified = client.post("/v1/classify", json={"model": CLASSIFY, "input": ["a", "b"], "raw_scores": True}).json()
    assert (classified["object"], classified["model"], classified["usage"]) == (
        "classify", CLASSIFY, {"prompt_tokens": 6, "total_tokens": 6})
    assert classified["data"] == [[{"label": "positive", "score": 2.0}, {"label": "neutral", "score": 0.5},
                                   {"label": "negative", "score": -1.0}]] * 2
    sparse = client.post("/embed_sparse", json={"inputs": "a"})
    assert sparse.status_code == 200 and sparse.json() == [[{"index": 1, "value": 0.5}, {"index": 5, "value": 0.25}]]


@pytest.mark.parametrize("path, body", [
    ("/v1/embeddings", {"model": RERANK, "input": "x"}),
    ("/v1/rerank", {"model": MODEL, "query": "q", "documents": ["d"]}),
    ("/rerank", {"model": CLASSIFY, "query": "q", "documents": ["d"]}),
    ("/v1/classify", {"model": SPARSE, "input": "x"}),
    ("/embed_sparse", {"model": RERANK, "inputs": "x"}),
], ids=["rerank to embeddings", "embed to rerank", "classify to rerank", "sparse to classify", "rerank to sparse"])
def test_a_model_sent_to_another_tasks_route_is_400_naming_its_task_and_route(path, body):
    response = _client().post(path, json=body)
    error = _error(response)
    task = INFOS[body["model"]].task
    assert (response.status_code, error["code"], error["param"]) == (400, "wrong_task", "model")
    assert f"is a {task} model" in error["message"] and OPENAI_ROUTES[task] in error["message"], error["message"]


def test_sparse_without_a_model_needs_exactly_one_sparse_model(monkeypatch):
    monkeypatch.setitem(INFOS, "fake-sparse-2", replace(INFOS[SPARSE], name="fake-sparse-2"))
    response = _client().post("/embed_sparse", json={"inputs": "x"})
    assert (response.status_code, _error(response)["code"]) == (400, "model_required")
    assert "fake-sparse, fake-sparse-2" in _error(response)["message"]
    assert _client().post("/embed_sparse", json={"inputs": "x", "model": SPARSE}).status_code == 200


def test_more_documents_than_the_doors_cap_are_400_naming_it():
    client = _client(max_documents=3)
    response = client.post("/v1/rerank", json={"model": RERANK, "query": "q", "documents": ["d"] * 4})
    assert (response.status_code, _error(response)["code"]) == (400, "too_many_documents")
    assert "limit of 3 per request" in _error(response)["message"]
    assert client.post("/v1/rerank", json={"model": RERANK, "query": "q", "documents": ["d"] * 3}).status_code == 200
