"""The OpenAI-compatible API through its real clients (the `openai` package, curl) against a real server.

Every exchange of these clients is also checked against the door's own OpenAPI document (test_openai_app.py's
`Conformance`): a 200 request body validates against the request schema, a 422 one does not, and every answer
matches the schema of its status.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import openai
import pytest

from bertserve import Encoder
from bertserve.frontdoor import FrontDoor
from bertserve.server import free_ports

from ..conftest import DEFAULT_NAME, STREAM_NAME, TOKENS_NAME, crawling_clients, settled, steady
from ..corpus import sentences
from .conftest import API_KEY, door_config, internals
from .test_openai_app import Conformance

TEXTS = sentences(32)


@pytest.fixture(scope="module")
def client(door):
    # A failed check surfaces as the client's APIConnectionError, caused by the AssertionError that says why.
    http = openai.DefaultHttpxClient(event_hooks={"response": [_conformance(door).hook]})
    return openai.OpenAI(base_url=door.openai_url, api_key=API_KEY, timeout=60, max_retries=0, http_client=http)


@pytest.fixture(scope="module")
def sdk(server):
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as encoder:
        yield encoder


def test_float_vectors_equal_the_sdks_and_usage_counts_real_tokens(client, sdk):
    response = client.embeddings.create(model=DEFAULT_NAME, input=TEXTS, encoding_format="float")
    got = np.array([item.embedding for item in response.data], np.float32)
    want, tokens = sdk.encode(TEXTS, show_tokens=True)
    assert [item.index for item in response.data] == list(range(len(TEXTS)))
    assert {item.object for item in response.data} == {"embedding"} and response.object == "list"
    assert response.model == DEFAULT_NAME
    assert np.abs(got - want).max() <= 1e-5
    # The tokens the model saw, [CLS]/[SEP] included, after truncation to max_seq_len.
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(len(t) for t in tokens)


def test_base64_is_little_endian_float32(client, sdk):
    response = client.embeddings.create(model=DEFAULT_NAME, input=TEXTS[:4], encoding_format="base64")
    got = np.stack([np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in response.data])
    assert np.abs(got - sdk.encode(TEXTS[:4])).max() <= 1e-5


def test_the_python_clients_default_path_decodes(client, sdk):
    """openai-python asks for base64 by default and decodes it itself."""
    response = client.embeddings.create(model=DEFAULT_NAME, input="one sentence")
    assert np.abs(np.array(response.data[0].embedding) - sdk.encode(["one sentence"])[0]).max() <= 1e-5


@pytest.mark.parametrize("dimensions", [1, 64, 383, 384])
def test_dimensions_keep_the_first_values_renormalised(client, sdk, dimensions):
    response = client.embeddings.create(model=DEFAULT_NAME, input=TEXTS[:3], dimensions=dimensions,
                                        encoding_format="float")
    got = np.array([item.embedding for item in response.data])
    full = sdk.encode(TEXTS[:3])[:, :dimensions]
    assert got.shape == (3, dimensions)
    assert np.abs(got - full / np.linalg.norm(full, axis=1, keepdims=True)).max() <= 1e-5


def test_2048_inputs_come_back_complete_and_in_order(client, server):
    # The cheap model, and base64: the test is about the count and the order, not the model or the float format.
    texts = [f"sentence number {i} about {TEXTS[i % len(TEXTS)][:40]}" for i in range(2048)]
    response = client.embeddings.create(model=STREAM_NAME, input=texts, encoding_format="base64")
    assert [item.index for item in response.data] == list(range(2048))
    got = np.stack([np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in response.data])
    with Encoder(server.grpc_url, model=STREAM_NAME) as sdk:
        assert np.abs(got - sdk.encode(texts)).max() <= 1e-5


@pytest.mark.parametrize("call, status, code", [
    (dict(model="no-such-model", input="x"), 404, "model_not_found"),
    (dict(model=DEFAULT_NAME, input=[]), 400, "empty_input"),
    (dict(model=DEFAULT_NAME, input=""), 400, "empty_input"),
    (dict(model=DEFAULT_NAME, input=["fine", "  "]), 400, "empty_input"),
    (dict(model=DEFAULT_NAME, input=["x"] * 2049), 400, "too_many_inputs"),
    (dict(model=DEFAULT_NAME, input=[[101, 2023, 102]]), 400, "token_ids_unsupported"),
    (dict(model=DEFAULT_NAME, input="x", dimensions=385), 400, "invalid_value"),
    (dict(model=DEFAULT_NAME, input="x", dimensions=0), 400, "invalid_value"),
    (dict(model=TOKENS_NAME, input="x"), 400, "model_not_pooled"),
], ids=["unknown model", "empty list", "empty string", "blank item", "2049 inputs", "token ids", "dims too large",
        "dims zero", "token-level model"])
def test_client_mistakes_get_openai_errors(client, call, status, code):
    with pytest.raises(openai.APIStatusError) as raised:
        client.embeddings.create(**call)
    assert raised.value.status_code == status
    assert raised.value.body["code"] == code and raised.value.body["message"]
    assert raised.value.body["type"] == "invalid_request_error"


def test_a_wrong_or_missing_key_is_401(door):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=door.openai_url, api_key=key or "x", timeout=30, max_retries=0,
                            default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as raised:
            bad.embeddings.create(model=DEFAULT_NAME, input="x")
        assert raised.value.body["code"] == "invalid_api_key"


def test_models_lists_what_is_served_and_nothing_else(client, server):
    """Exactly the repository's embedding models: a tokenizer or encoder component listed could be picked."""
    served = {path.parent.name for path in Path(server.config.repository).glob("*/bertserve.json")}
    ids = [model.id for model in client.models.list()]
    assert {DEFAULT_NAME, TOKENS_NAME, STREAM_NAME} <= served
    assert sorted(ids) == sorted(served)
    assert not [name for name in ids if name.endswith(("_tokenizer", "_encoder"))]


@pytest.mark.parametrize("text", ["\u200b\u200d", "\x00"], ids=["zero-width", "nul"])
def test_input_the_tokenizer_refuses_is_400_and_names_no_internal_address(client, server, text):
    """They pass the door's blank check; Triton refuses them, and its error names the door's own Triton address."""
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=DEFAULT_NAME, input=[text])
    assert (raised.value.body["code"], raised.value.body["param"]) == ("invalid_input", "input")
    body = raised.value.response.text
    assert "refused the input" in body and not [word for word in internals(server) if word in body], body


def _curl(door, path, *args):
    """(status, body) of curl's request, checked against the door's OpenAPI document."""
    status, body = _fetch(door, path, *args)
    sent = args[args.index("-d") + 1].encode() if "-d" in args else None
    method = "POST" if sent is not None or "--data-binary" in args else "GET"
    _conformance(door).check(method, path, status, sent, body.encode())
    return status, body


def _fetch(door, path, *args):
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--max-time", "60",
                           door.openai_url.removesuffix("/v1") + path, *args], capture_output=True, text=True, timeout=90)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@lru_cache(maxsize=None)
def _conformance(door) -> Conformance:
    """The door's OpenAPI document, fetched without the key (it needs none), as the checker of its exchanges."""
    status, document = _fetch(door, "/openapi.json")
    assert status == 200, document
    return Conformance(json.loads(document))


AUTH = ["-H", f"Authorization: Bearer {API_KEY}", "-H", "Content-Type: application/json"]


def test_curl_gets_the_same_vectors(door, sdk):
    status, body = _curl(door, "/v1/embeddings", *AUTH, "-d",
                         json.dumps({"model": DEFAULT_NAME, "input": TEXTS[:2]}))
    assert status == 200
    got = np.array([item["embedding"] for item in json.loads(body)["data"]], np.float32)
    assert np.abs(got - sdk.encode(TEXTS[:2])).max() <= 1e-5


@pytest.mark.parametrize("data, status, code", [
    ("{not json", 400, "invalid_json"),
    ("[1, 2]", 422, "invalid_body"),
    (json.dumps({"model": DEFAULT_NAME}), 422, "missing"),
    (json.dumps({"input": "x"}), 422, "missing"),
    (json.dumps({"model": DEFAULT_NAME, "input": 42}), 422, "invalid_type"),
    (json.dumps({"model": DEFAULT_NAME, "input": ["ok", None]}), 422, "invalid_type"),
    (json.dumps({"model": DEFAULT_NAME, "input": "x", "encoding_format": "int8"}), 400, "invalid_value"),
    (json.dumps({"model": DEFAULT_NAME, "input": "x", "dimensions": "64"}), 422, "invalid_type"),
])
def test_curl_bad_bodies_are_4xx_with_an_openai_error(door, data, status, code):
    got, body = _curl(door, "/v1/embeddings", *AUTH, "-d", data)
    assert got == status
    assert json.loads(body)["error"]["code"] == code


def test_a_body_over_the_limit_is_413(door, tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"model": DEFAULT_NAME, "input": ["word " * 1000] * 7000}))  # ~35 MB
    status, body = _curl(door, "/v1/embeddings", *AUTH, "--data-binary", f"@{big}")
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"


def test_over_long_input_is_truncated_and_says_so(door, sdk):
    long = "word " * 600
    status, _ = _curl(door, "/v1/embeddings", *AUTH, "-d", json.dumps({"model": DEFAULT_NAME, "input": [long, "x"]}))
    assert status == 200
    done = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", *AUTH, "-d",
                           json.dumps({"model": DEFAULT_NAME, "input": [long, "x"]}),
                           door.openai_url + "/embeddings"], capture_output=True, text=True, timeout=90)
    assert "bertserve-truncated-inputs: 1" in done.stdout.lower()


def test_slow_clients_holding_connections_do_not_block_others(door, client):
    """200 connections that never finish their headers (uvicorn gives headers no deadline, so they stay open):
    the door keeps answering everyone else."""
    with crawling_clients(door.config.openai_port, "/v1/embeddings") as crawl:
        for _ in range(3):
            crawl()
            answer = client.with_options(timeout=10).embeddings.create(model=DEFAULT_NAME, input=["served meanwhile"])
            assert len(answer.data) == 1 and len(answer.data[0].embedding) == 384
    assert door.is_alive()


def test_health_reflects_real_readiness_and_needs_no_key(door):
    status, body = _curl(door, "/health")
    assert status == 200 and json.loads(body) == {"status": "ready"}


def test_unknown_routes_and_methods_are_4xx(door):
    for answer, status, code in [(_curl(door, "/v1/completions", *AUTH, "-d", "{}"), 404, "not_found"),
                                 (_curl(door, "/v1/embeddings", *AUTH), 405, "method_not_allowed")]:
        assert (answer[0], json.loads(answer[1])["error"]["code"]) == (status, code)


def test_health_turns_503_when_a_backend_process_is_dead(throwaway_server):
    """Triton's own readiness stays true with a dead backend; the front door's health runs a real inference."""
    from ..reliability.conftest import kill_backend

    with FrontDoor(door_config(throwaway_server, bert_as_service_port=0)) as front:
        assert _curl(front, "/health")[0] == 200
        kill_backend(throwaway_server, f"{DEFAULT_NAME}_encoder")  # every instance; no supervisor here
        status, body = settled(lambda: _curl(front, "/health"), lambda answer: answer[0] == 503)  # past the cache
        assert status == 503 and json.loads(body)["error"]["code"] == "not_ready"
        assert "Traceback" not in body and not [word for word in internals(throwaway_server) if word in body], body


@pytest.mark.server  # a front-door process of its own
def test_a_door_whose_triton_is_not_there_answers_503():
    """Nothing listens at its Triton address: embeddings are 503 `unavailable` (retry later), health says why."""
    (port,) = free_ports(1)
    with FrontDoor(door_config(None, triton_url=f"127.0.0.1:{port}", bert_as_service_port=0, timeout=5.0)) as front:
        status, body = _curl(front, "/v1/embeddings", *AUTH, "-d", json.dumps({"model": DEFAULT_NAME, "input": "x"}))
        assert (status, json.loads(body)["error"]["code"], json.loads(body)["error"]["type"]) == (
            503, "unavailable", "server_error")
        status, body = _curl(front, "/health")
        assert (status, json.loads(body)["error"]["code"]) == (503, "not_ready")
        assert json.loads(body)["error"]["message"] == "not ready: the Triton server is not reachable"


def _together(client, inputs: list[list[str]]) -> list[tuple[int, str]]:
    """(status, body) of one HTTP request per input, all sent at once from their own threads."""
    start = threading.Barrier(len(inputs))

    def post(texts: list[str]) -> tuple[int, str]:
        start.wait(60)
        answer = client.embeddings.with_raw_response.create(model=DEFAULT_NAME, input=texts, encoding_format="float")
        return answer.http_response.status_code, answer.http_response.text

    def answered(texts: list[str]) -> tuple[int, str]:
        try:
            return post(texts)
        except openai.APIStatusError as refused:
            return refused.status_code, refused.response.text

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(answered, inputs))


def _ensemble(sdk) -> tuple[int, int]:
    """(successful, failed) requests Triton has counted for the default model's ensemble."""
    (model,) = [m for m in sdk.server_status().models if m.name == DEFAULT_NAME]
    return model.requests, model.failures


def _assert_own_answer(sdk, texts: list[str], status: int, body: str) -> None:
    """A 200 whose vectors, order and usage are those of `texts` encoded alone."""
    assert status == 200, body
    answer = json.loads(body)
    want, tokens = sdk.encode(texts, show_tokens=True)
    assert [item["index"] for item in answer["data"]] == list(range(len(texts)))
    assert np.abs(np.array([item["embedding"] for item in answer["data"]], np.float32) - want).max() <= 1e-5
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] == sum(len(t) for t in tokens)


def test_small_requests_sent_together_share_triton_calls_and_keep_their_own_answers(client, sdk):
    """32 requests of 1 to 6 items (a pair and an over-long item among them) at once: Triton counts fewer
    requests than the door got, and each request still gets its own vectors, in its order, and its own usage."""
    long = "word " * 600  # truncated to max_seq_len: usage counts what the model saw
    inputs = [[TEXTS[(i + k) % len(TEXTS)] for k in range(1 + i % 6)] for i in range(32)]
    inputs[7][0] = f"{TEXTS[1]} ||| {TEXTS[2]}"  # a pair beside single sentences in a shared call
    inputs[12].append(long)
    before = steady(lambda: _ensemble(sdk))
    answers = _together(client, inputs)
    after = settled(lambda: _ensemble(sdk), lambda counts: counts[0] - before[0] >= 1)
    for texts, (status, body) in zip(inputs, answers):
        _assert_own_answer(sdk, texts, status, body)
    assert after[1] == before[1]
    assert 1 <= after[0] - before[0] < len(inputs), (before, after)


def test_a_bad_request_among_concurrent_ones_gets_its_own_400_and_the_others_their_200(client, sdk):
    """Bad items fail the shared calls they are in; each request of such a call is then answered alone: the bad
    ones get the very 400 they get when sent alone, the others their 200."""
    bad = [TEXTS[0], "\x00"]  # the tokenizer refuses item 1 of its request
    start = steady(lambda: _ensemble(sdk))
    alone = _together(client, [bad])[0]
    assert alone[0] == 400 and "refused the input" in alone[1]
    before = steady(lambda: _ensemble(sdk))
    failed_alone = before[1] - start[1]  # the failures Triton counts for one bad request sent alone
    inputs = [bad if i % 6 == 3 else [TEXTS[(i + k) % len(TEXTS)] for k in range(1 + i % 4)] for i in range(24)]
    answers = _together(client, inputs)
    after = steady(lambda: _ensemble(sdk))
    for texts, answer in zip(inputs, answers):
        if texts is bad:
            assert answer == alone
        else:
            _assert_own_answer(sdk, texts, *answer)
    # More failures than the bad requests alone make: some failed a shared call first and were sent again.
    bad_count = sum(texts is bad for texts in inputs)
    assert failed_alone >= 1 and after[1] - before[1] > bad_count * failed_alone, (start, before, after)
