"""How the server's answers become bertserve errors: what a caller can act on, and what is worth a retry."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from bertserve import Encoder, ModelInfo, client
from bertserve._transport import Keys, parse_address, translate_error
from bertserve.errors import (
    AuthenticationError,
    BertserveError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
    ServerUnavailableError,
)

ADDRESS = parse_address("localhost:8001")
# Triton 2.51's words, as a client meets them: a backend process that died (heal off, or before the supervisor
# reloads it), and an ensemble unloaded for a reload (a supervisor that unloads before it loads).
DEAD = "in ensemble 'm', Stub process 'm_tokenizer_0_0' is not healthy."
RELOADING = "Request for unknown model: 'm' has no available versions"


@pytest.mark.parametrize("status, message, kind, words", [
    ("400", "input item 0 is an empty string", InvalidInputError, "refused the input: input item 0"),
    ("StatusCode.INVALID_ARGUMENT", "input item 3 is not valid UTF-8", InvalidInputError, "item 3"),
    ("403", "This API is restricted, expecting header 'authorization'", AuthenticationError, "api_key="),
    ("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header "
     "'triton-grpc-protocol-authorization'", AuthenticationError, "requires an API key"),
    ("403", "This API is restricted, expecting header 'bertserve-admin-key'", AuthenticationError, "admin_key="),
    ("503", "Exceeds maximum queue size", ServerBusyError, "at capacity"),
    ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ServerBusyError, "at capacity"),
    ("StatusCode.UNAVAILABLE", "Request timeout expired", ServerBusyError, "at capacity"),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServerUnavailableError, "bertserve serve"),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", RequestTimeoutError, "raise `timeout=`"),
    ("400", "Request for unknown model: 'm' is not found", ModelNotFoundError, "does not serve a model 'm'"),
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'm' is not found", ModelNotFoundError, "a model 'm'"),
    ("StatusCode.INTERNAL", DEAD, ModelUnavailableError, "model 'm' is unavailable"),
    ("500", DEAD, ModelUnavailableError, "is not healthy"),
    ("400", RELOADING, ModelUnavailableError, "model 'm' is unavailable"),
    ("StatusCode.NOT_FOUND", RELOADING, ModelUnavailableError, "is being reloaded"),
    ("StatusCode.UNAVAILABLE", "Request for unknown model: 'm' version 1 is not at ready state",
     ModelUnavailableError, "model 'm' is unavailable"),
    ("StatusCode.UNAVAILABLE", "Server not ready", ServerUnavailableError, "could not reach"),
    ("400", "Server not ready", ServerUnavailableError, "could not reach"),
    ("StatusCode.CANCELLED", "CANCELLED", ServerUnavailableError, "could not reach"),  # a server shutting down
    ("StatusCode.INTERNAL", "Failed to process the request(s) for model 'm_encoder_0_0'", ServerError, "m_encoder"),
])
def test_server_answers_map_to_errors_a_caller_can_act_on(status, message, kind, words):
    error = translate_error(InferenceServerException(message, status=status), ADDRESS, "m")
    assert type(error) is kind and words in str(error)
    assert str(ADDRESS) in str(error) and str(ADDRESS) not in error.detail and ADDRESS.host not in error.detail


@pytest.mark.parametrize("exc", [TimeoutError("timed out"), ConnectionRefusedError(111, "Connection refused"),
                                 RuntimeError("something else")])
def test_errors_without_a_server_message_have_a_detail_without_the_address(exc):
    error = translate_error(exc, ADDRESS, "m")
    assert str(ADDRESS) in str(error) and ADDRESS.host not in error.detail and str(ADDRESS.port) not in error.detail


@pytest.mark.parametrize("message", [DEAD, RELOADING, "Request for unknown model: 'm' is not found",
                                     "input item 0 is an empty string", "Stub process crashed"])
def test_an_error_from_a_server_message_has_a_detail_without_the_address(message):
    """`detail` is what a front door passes on: the server's words, never the internal address it called."""
    error = translate_error(InferenceServerException(message, status="400"), ADDRESS, "m")
    assert message in error.detail and str(ADDRESS) not in error.detail and str(ADDRESS) in str(error)


def test_keys_travel_as_triton_expects_them_per_protocol():
    keys = Keys(api_key="a" * 16, admin_key="b" * 16)
    assert keys.headers("http") == {"authorization": "Bearer " + "a" * 16, "bertserve-admin-key": "b" * 16}
    assert keys.headers("grpc") == {"triton-grpc-protocol-authorization": "Bearer " + "a" * 16,
                                    "triton-grpc-protocol-bertserve-admin-key": "b" * 16}
    assert Keys().headers("grpc") == {}


class _Transport:
    """Our transport interface, answering each infer with the next of `answers`: an exception to raise, or None
    for vectors. A model other than `served` is unknown, in Triton's words."""

    def __init__(self, answers: list, served: str = "m") -> None:
        self.answers, self.served, self.infers, self.unknown = list(answers), served, 0, 0
        self.info = ModelInfo(name=served, source="m", dim=4, pooling="mean", layers=(-1,), normalize=False,
                              max_seq_len=16, max_batch_size=8)

    def _known(self, model: str) -> None:
        if model != self.served:
            self.unknown += 1
            raise translate_error(InferenceServerException(f"Request for unknown model: '{model}' is not found",
                                                           status="400"), ADDRESS, model)

    def model_config(self, model: str) -> dict[str, Any]:
        self._known(model)
        return {"parameters": self.info.to_parameters()}

    def statistics(self) -> list[dict[str, Any]]:
        return [{"name": self.served}]

    def model_ready(self, model: str) -> bool:
        return model == self.served

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self._known(model)
        self.infers += 1
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        n = len(inputs["text"])
        return {"embedding": np.ones((n, 4), np.float32), "token_count": np.full((n, 1), 3, np.int32)}

    def close(self) -> None:
        pass


def _unavailable(message: str = DEAD) -> BertserveError:
    return translate_error(InferenceServerException(message, status="StatusCode.INTERNAL"), ADDRESS, "m")


@pytest.fixture
def fake(monkeypatch):
    """Encoders made in the test talk to the returned `_Transport` (set its `answers`)."""
    transport = _Transport([])
    monkeypatch.setattr(client, "open_transport", lambda *args: transport)
    return transport


def test_a_model_being_healed_is_waited_for_within_the_timeout(fake):
    fake.answers = [_unavailable(), _unavailable(RELOADING), _unavailable()]
    with Encoder("localhost:8001", model="m", timeout=10) as enc:
        assert enc.encode(["waits, then is served"]).shape == (1, 4)
        assert (enc.status().retries, enc.status().failures, fake.infers) == (3, 0, 4)


def test_a_model_that_stays_unavailable_fails_as_unavailable_within_the_timeout(fake):
    fake.answers = [_unavailable()] * 1000
    with Encoder("localhost:8001", model="m", timeout=1) as enc:
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="model 'm' is unavailable") as raised:
            enc.encode(["never served"])
        assert time.monotonic() - started < 1.5  # its timeout, and the scheduler's slack on a busy machine
        assert not isinstance(raised.value, ModelNotFoundError)
        assert enc.status().retries == fake.infers - 1 >= 3 and enc.status().failures == 1


def test_retries_zero_reports_an_unavailable_model_at_once(fake):
    """What a health check wants: a dead backend is reported by the first answer, not after the timeout."""
    fake.answers = [_unavailable()]
    with Encoder("localhost:8001", model="m", timeout=10, retries=0) as enc:
        with pytest.raises(ModelUnavailableError, match="is not healthy"):
            enc.encode(["dead"])
        assert (fake.infers, enc.status().retries) == (1, 0)


def test_a_model_that_does_not_exist_fails_at_once(fake):
    with Encoder("localhost:8001", model="nope", timeout=10) as enc:
        with pytest.raises(ModelNotFoundError, match=r"does not serve a ready model 'nope'; it serves \['m'\]"):
            enc.encode(["no such model"])
        assert (fake.unknown, fake.infers, enc.status().retries) == (1, 0, 0)  # asked once, not retried
