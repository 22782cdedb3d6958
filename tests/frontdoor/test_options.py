"""POST /v1/embeddings' options beyond OpenAI's (prompts, truncation side, long inputs, compact vectors) through the
real door in front of the real server, with the SDK's answers to the same options as the reference (the SDK's own
tests compare those to sentence-transformers), and their bad values, each a 4xx that names it.

Every exchange is also checked against the door's OpenAPI document (the `http` client of conftest.py).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from bertserve.contract import MAX_PROMPT_CHARS
from bertserve.frontdoor import FrontDoorConfig
from bertserve.frontdoor.models import Models
from bertserve.frontdoor.openai import TRUNCATED_HEADER, create_app

from ..conftest import DEFAULT_NAME, PROMPTS, PROMPTS_NAME, STREAM_NAME
from ..corpus import sentences
from .test_tasks import _ok

TEXTS = sentences(4)
LONG = " ".join(sentences(30))  # 750 tokens: 3 windows of the default model's 256 tokens, far under its character budget
_CODES = {"int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}


def _embed(http, texts: Any, model: str = DEFAULT_NAME, **options: Any) -> Any:
    return http.post("/v1/embeddings", json={"model": model, "input": texts, **options})


def _rows(body: Any) -> list[Any]:
    assert [item["index"] for item in body["data"]] == list(range(len(body["data"])))
    return [item["embedding"] for item in body["data"]]


# Each option with a value that changes the vectors of these texts, against the SDK's answer to the same option.
@pytest.mark.parametrize("options, texts", [
    ({"prompt": "query: "}, TEXTS),
    ({"truncation_direction": "left"}, [LONG, TEXTS[0]]),
    ({"long_input": "chunk"}, [LONG, TEXTS[0]]),
    ({"long_input": "chunk", "truncation_direction": "left", "prompt": "passage: "}, [TEXTS[1], LONG]),
], ids=["prompt", "left", "chunk", "chunk left prompted"])
def test_float_options_give_the_sdks_vectors_and_usage(http, sdks, options, texts):
    response = _embed(http, texts, **options)
    body = _ok(response)
    want = sdks[DEFAULT_NAME].encode_detailed(texts, **options)
    got = np.array(_rows(body), np.float32)
    assert np.abs(got - want.vectors).max() <= 1e-5
    assert np.abs(got - sdks[DEFAULT_NAME].encode(texts)).max() > 1e-3, "the option changed nothing: a weak test"
    assert body["usage"] == {"prompt_tokens": want.tokens_seen, "total_tokens": want.tokens_seen}
    assert response.headers.get(TRUNCATED_HEADER) == (str(int(want.truncated.sum())) if want.truncated.any() else None)


def test_chunk_encodes_the_whole_text_and_truncate_counts_what_it_cut(http):
    cut = _embed(http, [LONG, TEXTS[0]])
    whole = _embed(http, [LONG, TEXTS[0]], long_input="chunk")
    assert cut.headers[TRUNCATED_HEADER] == "1" and TRUNCATED_HEADER not in whole.headers
    # Every window's tokens are counted: more than the one window truncation keeps.
    assert _ok(whole)["usage"]["prompt_tokens"] > _ok(cut)["usage"]["prompt_tokens"]


@pytest.mark.parametrize("dtype", ["binary", "ubinary", "int8", "uint8"])
def test_compact_vectors_are_the_sdks_codes_as_integers_or_base64_bytes(http, sdks, dtype):
    want = sdks[DEFAULT_NAME].encode(TEXTS, output_dtype=dtype)
    assert want.dtype == _CODES[dtype]
    listed = _rows(_ok(_embed(http, TEXTS, output_dtype=dtype)))
    assert all(isinstance(value, int) for row in listed for value in row)
    assert np.array_equal(np.array(listed), want)
    packed = _rows(_ok(_embed(http, TEXTS, output_dtype=dtype, encoding_format="base64")))
    decoded = np.stack([np.frombuffer(base64.b64decode(row), _CODES[dtype]) for row in packed])
    dim = sdks[DEFAULT_NAME].info().dim
    assert decoded.shape == (len(TEXTS), math.ceil(dim / 8) if "binary" in dtype else dim)
    assert np.array_equal(decoded, want)


def test_binary_is_the_sign_bits_of_the_float_vector(http):
    floats = np.array(_rows(_ok(_embed(http, TEXTS))), np.float32)
    bits = np.array(_rows(_ok(_embed(http, TEXTS, output_dtype="ubinary"))), np.uint8)
    assert np.array_equal(np.unpackbits(bits, axis=1)[:, :floats.shape[1]], (floats > 0).astype(np.uint8))


@pytest.mark.parametrize("options, param, named", [
    ({"prompt_name": "no-such-prompt"}, "prompt_name", "'no-such-prompt'"),
    ({"prompt_name": ""}, "prompt_name", "prompt_name is empty"),
    ({"prompt_name": "query", "prompt": "query: "}, "prompt", "prompt_name and prompt are both set"),
    ({"truncation_direction": "middle"}, "truncation_direction", "'middle'"),
    ({"long_input": "summarise"}, "long_input", "'summarise'"),
    ({"output_dtype": "float16"}, "output_dtype", "'float16'"),
    ({"output_dtype": "binary", "dimensions": 64}, "dimensions", "output_dtype 'binary'"),
    ({"long_input": "error"}, "input", "item 0"),
    ({"prompt": "p" * (MAX_PROMPT_CHARS + 1)}, "prompt", f"prompt is {MAX_PROMPT_CHARS + 1:,} characters"),
    ({"prompt_name": "n" * (MAX_PROMPT_CHARS + 1)}, "prompt_name", f"prompt_name is {MAX_PROMPT_CHARS + 1:,} char"),
], ids=["unknown prompt", "empty prompt name", "prompt and name", "bad direction", "bad long_input",
        "unknown dtype", "dimensions with binary", "long input refused", "prompt too long", "prompt name too long"])
def test_a_bad_option_is_400_naming_it_and_the_door_keeps_serving(http, options, param, named):
    response = _embed(http, [LONG, TEXTS[0]], **options)
    error = response.json()["error"]
    assert (response.status_code, error["param"], error["type"]) == (400, param, "invalid_request_error"), error
    assert named in error["message"], error["message"]
    assert len(_rows(_ok(_embed(http, TEXTS)))) == len(TEXTS)


def test_chunk_past_the_window_bound_is_400_naming_it(http, sdks):
    """Two texts of about 58 windows each of the small model (14 tokens a window): over the door's 64."""
    long = "a " * 790
    response = _embed(http, [long, long], model=STREAM_NAME, long_input="chunk")
    error = response.json()["error"]
    assert (response.status_code, error["param"]) == (400, "input"), error
    assert "more than 64 windows" in error["message"], error["message"]
    assert len(_rows(_ok(_embed(http, [long], model=STREAM_NAME, long_input="chunk")))) == 1


def test_the_doors_max_windows_is_the_bound(server, sdks):
    """The door's own `max_windows`, not the SDK's default: its app in process, in front of the real server."""
    config = FrontDoorConfig(triton_url=server.grpc_url, host="127.0.0.1", openai_port=1, max_windows=3)
    models = Models(config)
    try:
        with TestClient(create_app(config, models)) as client:
            three, four = "a " * 40, "a " * 50  # 3 and 4 windows of 14 tokens (40 and 50 text tokens)
            response = _embed(client, [three, TEXTS[0]], model=STREAM_NAME, long_input="chunk")
            want = sdks[STREAM_NAME].encode([three, TEXTS[0]], long_input="chunk")
            assert np.abs(np.array(_rows(_ok(response)), np.float32) - want).max() <= 1e-5
            refused = _embed(client, [four], model=STREAM_NAME, long_input="chunk")
            assert refused.status_code == 400 and "more than 3 windows" in refused.json()["error"]["message"]
    finally:
        models.close()


def test_named_and_default_prompts_give_the_sdks_vectors_and_are_listed(http, sdks):
    encoder = sdks[PROMPTS_NAME]
    info = encoder.info()
    assert info.prompts, "the prompts model has no prompts: the test would prove nothing"
    listed = {model["id"]: model for model in _ok(http.get("/v1/models"))["data"]}[PROMPTS_NAME]
    assert (listed["prompts"], listed["default_prompt_name"]) == (dict(info.prompts), info.default_prompt_name or None)
    for options in [{}, {"prompt": ""}, *({"prompt_name": name} for name in info.prompts)]:
        got = np.array(_rows(_ok(_embed(http, TEXTS, model=PROMPTS_NAME, **options))), np.float32)
        assert np.abs(got - encoder.encode(TEXTS, **options)).max() <= 1e-5, options


def test_models_list_each_models_prompts(http, sdks):
    models = _ok(http.get("/v1/models"))["data"]
    for model in models:
        info = sdks[model["id"]].info()
        assert model["prompts"] == dict(info.prompts)
        assert model["default_prompt_name"] == (info.default_prompt_name or None)
    assert {model["id"]: model["prompts"] for model in models}[PROMPTS_NAME] == PROMPTS
