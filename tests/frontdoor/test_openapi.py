"""The OpenAI door's OpenAPI document (`GET /openapi.json`) and docs page (`GET /docs`), read from the app itself.

Pure: the app of test_openai_app.py, in front of fake models. Every exchange of these tests, as of that module's,
is also checked against the document by its client (`conforms`): a 200 request body validates against the request
schema, a 422 one does not, and every answer matches the schema of its status.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
from openapi_spec_validator import validate

from .test_openai_app import CLASSIFY, KEY, MODEL, RERANK, SPARSE, _client

NO_KEY = {"Authorization": ""}


@pytest.fixture(scope="module")
def client():
    return _client()


def _document(key: Optional[str] = KEY) -> dict[str, Any]:
    response = _client(key=key).get("/openapi.json", headers=NO_KEY)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def test_the_document_is_valid_openapi_3():
    """The keyed door's document: the open door's is the same without the security scheme and the 401s (checked
    below), and a validation takes 0.2 s."""
    document = _document()
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_the_app_serves_is_documented_and_nothing_else(client):
    """Read from the app's own routes: a route served but left out of the table, or the reverse, fails here."""
    served = {(method.lower(), route.path) for route in client.app.routes for method in route.methods - {"HEAD"}}
    document = _document()
    assert served == {(method, path) for path, item in document["paths"].items() for method in item}
    assert {("post", "/v1/embeddings"), ("post", "/v1/rerank"), ("post", "/rerank"), ("post", "/v1/classify"),
            ("post", "/embed_sparse"), ("get", "/v1/models"), ("get", "/health"), ("get", "/openapi.json"),
            ("get", "/docs")} <= served


@pytest.mark.parametrize("key", [KEY, None], ids=["keyed", "open"])
def test_the_routes_documented_as_keyed_are_exactly_those_that_refuse_a_missing_key(key):
    """The document's bearer scheme and 401s match what each route does without a key, with and without one set."""
    client, document = _client(key=key), _document(key)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            answer = client.request(method, path, headers=NO_KEY, json={"model": MODEL, "input": "x"})
            assert (answer.status_code == 401) == bool(operation["security"]) == ("401" in operation["responses"])
    schemes = document["components"].get("securitySchemes")
    assert schemes == ({"bearer": {"type": "http", "scheme": "bearer",
                                   "description": "The key the front door was started with"}} if key else None)


def test_the_docs_page_is_swagger_ui_on_the_document(client):
    page = client.get("/docs", headers=NO_KEY)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "swagger-ui-bundle.js" in page.text and 'url: "openapi.json"' in page.text


def test_the_404_message_names_every_documented_route(client):
    message = client.post("/v1/completions", json={}).json()["error"]["message"]
    for path, item in _document()["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in message, message


# Bodies whose status the door decides before any model is asked: the client's check (`conforms`) asserts that the
# schema accepts each 200 body and refuses each 422 body. The door's other tests send more, each checked the same way.
# Not here: `"dimensions": 2.0`, a 422 (Python reads a float) that JSON Schema counts as an integer.
@pytest.mark.parametrize("body, status", [
    ({"model": MODEL, "input": "hello"}, 200),
    ({"model": MODEL, "input": ["a", "b"], "encoding_format": "base64", "dimensions": 2, "user": "u"}, 200),
    ({"model": MODEL, "input": ["a"], "encoding_format": None, "dimensions": None}, 200),
    ({"model": MODEL, "input": ["a"], "a field OpenAI may add": 1}, 200),
    ([{"model": MODEL, "input": "x"}], 422),
    ({"model": MODEL}, 422),
    ({"input": "x"}, 422),
    ({"model": "", "input": "x"}, 422),
    ({"model": 7, "input": "x"}, 422),
    ({"model": MODEL, "input": {"text": "x"}}, 422),
    ({"model": MODEL, "input": ["x", None]}, 422),
    ({"model": MODEL, "input": "x", "dimensions": True}, 422),
    ({"model": MODEL, "input": "x", "dimensions": "2"}, 422),
    ({"model": MODEL, "input": "x", "user": None}, 422),
    ({"model": MODEL, "input": "x", "prompt_name": None, "prompt": None, "truncation_direction": None,
      "long_input": None, "output_dtype": None}, 200),
    ({"model": MODEL, "input": "x", "prompt_name": 5}, 422),
    ({"model": MODEL, "input": "x", "prompt": ["query: "]}, 422),
], ids=["one text", "every field", "nulls", "unknown field", "a list", "no input", "no model", "empty model",
        "model 7", "input object", "input null item", "dimensions true", "dimensions string",
        "user null", "option nulls", "prompt_name 5", "prompt list"])
def test_the_request_schema_accepts_what_the_door_accepts(client, body, status):
    assert client.post("/v1/embeddings", json=body).status_code == status


_RANK = {"model": RERANK, "query": "q", "documents": ["a", "bb"]}


# The same for the task routes: Cohere's and Jina's rerank bodies, Infinity's classify, TEI's embed_sparse.
@pytest.mark.parametrize("path, body, status", [
    ("/v1/rerank", _RANK, 200),
    ("/rerank", {**_RANK, "documents": [{"text": "a", "title": "ignored"}, "bb"], "top_n": 1,
                 "return_documents": True}, 200),
    ("/v1/rerank", {**_RANK, "top_n": None, "return_documents": None, "a field Cohere may add": 1}, 200),
    ("/v1/rerank", {**_RANK, "top_n": 1.5}, 422),
    ("/v1/rerank", {**_RANK, "top_n": "3"}, 422),
    ("/v1/rerank", {**_RANK, "top_n": True}, 422),
    ("/v1/rerank", {"model": RERANK, "documents": ["a"]}, 422),
    ("/v1/rerank", {"model": RERANK, "query": "q"}, 422),
    ("/v1/rerank", {**_RANK, "model": 5}, 422),
    ("/v1/rerank", {**_RANK, "query": 5}, 422),
    ("/v1/rerank", {**_RANK, "documents": "a"}, 422),
    ("/v1/rerank", {**_RANK, "documents": [None]}, 422),
    ("/v1/rerank", {**_RANK, "documents": [{"txt": "a"}]}, 422),
    ("/v1/rerank", {**_RANK, "documents": [{"text": 5}]}, 422),
    ("/v1/rerank", {**_RANK, "return_documents": "yes"}, 422),
    ("/v1/rerank", [_RANK], 422),
    ("/v1/classify", {"model": CLASSIFY, "input": "x"}, 200),
    ("/v1/classify", {"model": CLASSIFY, "input": ["x", "y"], "raw_scores": True}, 200),
    ("/v1/classify", {"model": CLASSIFY, "input": "x", "raw_scores": "yes"}, 422),
    ("/v1/classify", {"model": CLASSIFY}, 422),
    ("/v1/classify", {"input": "x"}, 422),
    ("/embed_sparse", {"inputs": "x"}, 200),
    ("/embed_sparse", {"inputs": ["x"], "model": SPARSE, "truncate": True}, 200),
    ("/embed_sparse", {"inputs": ["x"], "model": None}, 200),
    ("/embed_sparse", {"inputs": ["x"], "model": 5}, 422),
    ("/embed_sparse", {"inputs": [7.5]}, 422),
    ("/embed_sparse", {"input": "x"}, 422),
], ids=["rerank", "jina documents", "rerank nulls", "top_n 1.5", "top_n string", "top_n true", "no query",
        "no documents", "model 5", "query 5", "documents string", "document null", "document without text",
        "document text 5", "return_documents string", "rerank list", "classify", "classify raw", "raw_scores string",
        "classify no input", "classify no model", "sparse", "sparse every field", "sparse null model",
        "sparse model 5", "sparse number", "sparse no inputs"])
def test_the_task_request_schemas_accept_what_the_door_accepts(client, path, body, status):
    assert client.post(path, json=body).status_code == status
