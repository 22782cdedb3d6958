"""Bad input gets a clear error: the SDK names the item before sending, and the server, sent the same items
straight over HTTP and gRPC, refuses them by name and keeps serving everyone else."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bertserve import Encoder
from bertserve._transport import open_transport, parse_address
from bertserve.errors import InvalidInputError

from ..conftest import DEFAULT_NAME

PROTOCOLS = ["grpc", "http"]


@pytest.fixture(scope="module")
def encoder(server):
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        yield enc


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


def _strings(*items: bytes) -> np.ndarray:
    return np.array([[item] for item in items], dtype=np.object_)


def _raw_infer(server, protocol: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """One request straight to Triton with tritonclient, bypassing every check the SDK makes."""
    module = grpcclient if protocol == "grpc" else httpclient
    url = server.grpc_url if protocol == "grpc" else server.http_url.removeprefix("http://")
    client = module.InferenceServerClient(url, **({} if protocol == "grpc" else {"network_timeout": 30}))
    tensors = []
    for name, array in inputs.items():
        datatype = {np.dtype(object): "BYTES", np.dtype(bool): "BOOL", np.dtype(np.int32): "INT32"}[array.dtype]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    try:
        options = {"client_timeout": 30} if protocol == "grpc" else {}
        return client.infer(DEFAULT_NAME, tensors, **options).as_numpy("embedding")
    finally:
        client.close()


# What a client may send that the SDK would have refused, and the server's words for it.
RAW_BAD_INPUT = {
    "empty batch": ({"text": np.zeros((0, 1), dtype=np.object_)}, "expected 1 string elements .* got 0"),
    "empty string": ({"text": _strings(b"")}, "input item 0 is an empty string"),
    "blank string": ({"text": _strings(b"ok", b" \t\n ")}, "input item 1 is an empty string"),
    "invalid UTF-8": ({"text": _strings(b"fine", b"broken \xff\xfe bytes")}, r"input item 1 \(text\) is not valid UTF-8"),
    "lone surrogate": ({"text": _strings(b"\xed\xa0\x80 lone surrogate")}, r"input item 0 \(text\) is not valid UTF-8"),
    "blank second sentence": ({"text": _strings(b"first"), "text_pair": _strings(b"   ")},
                              "input item 0 is an empty string"),
    "pre-tokenized, not JSON": ({"text": _strings(b"hello world"), "is_tokenized": np.array([[True]])},
                                "input item 0 is marked is_tokenized but is not a JSON list"),
    "pre-tokenized, empty token": ({"text": _strings(b'["hello", ""]'), "is_tokenized": np.array([[True]])},
                                   "input item 0 is marked is_tokenized but is not a JSON list of non-empty tokens"),
    "numbers, not strings": ({"text": np.array([[1], [2]], dtype=np.int32)}, "(?i)data.?type|TYPE_STRING|BYTES"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", RAW_BAD_INPUT)
def test_server_refuses_bad_input_by_name_and_keeps_serving(server, encoder, protocol, case):
    inputs, message = RAW_BAD_INPUT[case]
    with pytest.raises(InferenceServerException, match=message):
        _raw_infer(server, protocol, inputs)
    assert _raw_infer(server, protocol, {"text": _strings(b"still here")}).shape == (1, 384)


def test_bad_requests_batched_with_good_ones_fail_alone(server, encoder):
    """The dynamic batcher may put a bad request in one batch with good ones: only the bad one fails."""
    good = [f"sentence number {i}".encode() for i in range(24)]
    want = encoder.encode([g.decode() for g in good])

    def send(i: int):
        if i % 3 == 0:
            with pytest.raises(InferenceServerException, match="input item 0 is an empty string"):
                _raw_infer(server, "grpc", {"text": _strings(b"")})
            return None
        return _raw_infer(server, "grpc", {"text": _strings(good[i])})[0]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, range(24)))
    for i, vector in enumerate(results):
        if i % 3:
            assert np.abs(vector - want[i]).max() <= 1e-5, i


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_refusal_reaches_the_sdk_as_invalid_input_with_the_servers_message(server, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    transport = open_transport(parse_address(url, protocol), timeout=30)  # what Encoder sends its requests through
    try:
        with pytest.raises(InvalidInputError, match=r"refused the input: .*input item 0 is an empty string; "
                                                    r"send non-empty text"):
            transport.infer(DEFAULT_NAME, {"text": _strings(b"")}, ["embedding"])
    finally:
        transport.close()


def test_very_long_text_is_truncated_not_an_error(encoder):
    long_text = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    assert len(long_text) == 100_000
    vectors = encoder.encode([long_text, "short"])
    truncated = encoder.encode([" ".join(long_text.split()[:300])])  # well past 256 tokens as well
    assert vectors.shape == (2, 384)
    assert np.abs(vectors[0] - truncated[0]).max() <= 1e-5


def test_batch_larger_than_the_server_accepts_is_split_by_the_sdk(encoder):
    texts = [f"sentence number {i}" for i in range(3 * 64 + 5)]
    vectors = encoder.encode(texts)
    assert vectors.shape == (len(texts), 384)
    assert np.abs(vectors[100] - encoder.encode([texts[100]])[0]).max() <= 1e-5
