"""Bad input gets a clear error, and the server keeps serving afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bertserve import Encoder
from bertserve.errors import InvalidInputError

from ..conftest import DEFAULT_NAME


@pytest.fixture(scope="module")
def encoder(server):
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        yield enc


def _still_serving(encoder):
    assert encoder.encode(["still here"]).shape == (1, 384)


@pytest.mark.parametrize(
    "texts, message",
    [
        ([], "empty list"),
        ([""], "item 0 is an empty string"),
        (["ok", "   "], "item 1 is an empty string"),
        (["ok", 3], "item 1 is int, not str"),
        (["ok", None], "item 1 is NoneType, not str"),
        (["ok", b"bytes"], "item 1 is bytes, not str"),
        ("a single string", "wrap a single sentence in a list"),
        (["\ud800 lone surrogate"], "item 0 cannot be encoded as UTF-8"),
    ],
)
def test_sdk_rejects_bad_input_with_a_clear_error(encoder, texts, message):
    with pytest.raises(InvalidInputError, match=message):
        encoder.encode(texts)
    _still_serving(encoder)


def test_very_long_text_is_truncated_not_an_error(encoder):
    long_text = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    assert len(long_text) == 100_000
    vectors = encoder.encode([long_text, "short"])
    truncated = encoder.encode([" ".join(long_text.split()[:300])])  # well past 256 tokens as well
    assert vectors.shape == (2, 384)
    assert np.abs(vectors[0] - truncated[0]).max() <= 1e-5
    _still_serving(encoder)


def _raw_infer(server, array, datatype="BYTES"):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=30)
    tensor = httpclient.InferInput("text", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    try:
        return client.infer(DEFAULT_NAME, [tensor]).as_numpy("embedding")
    finally:
        client.close()


def test_invalid_utf8_sent_straight_to_triton_is_refused_by_name(server, encoder):
    bad = np.array([[b"fine"], [b"broken \xff\xfe bytes"]], dtype=np.object_)
    with pytest.raises(InferenceServerException, match=r"input item 1 \(text\) is not valid UTF-8"):
        _raw_infer(server, bad)
    _still_serving(encoder)


def test_empty_string_sent_straight_to_triton_is_refused(server, encoder):
    with pytest.raises(InferenceServerException, match="input item 0 is an empty string"):
        _raw_infer(server, np.array([[b""]], dtype=np.object_))
    _still_serving(encoder)


def test_non_string_tensor_sent_straight_to_triton_is_refused(server, encoder):
    with pytest.raises(InferenceServerException, match="(?i)data.?type|TYPE_STRING|BYTES"):
        _raw_infer(server, np.array([[1], [2]], dtype=np.int32), datatype="INT32")
    _still_serving(encoder)


def test_batch_larger_than_the_server_accepts_is_split_by_the_sdk(encoder):
    texts = [f"sentence number {i}" for i in range(3 * 64 + 5)]
    vectors = encoder.encode(texts)
    assert vectors.shape == (len(texts), 384)
    assert np.abs(vectors[100] - encoder.encode([texts[100]])[0]).max() <= 1e-5
