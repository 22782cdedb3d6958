"""How the server's answers become bertserve errors: what a caller can act on, and what is worth a retry."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from bertserve._transport import Keys, parse_address, translate_error
from bertserve.errors import (
    AuthenticationError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
    ServerUnavailableError,
)

ADDRESS = parse_address("localhost:8001")


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
    ("400", "Request for unknown model: 'm' is not found", ModelNotFoundError, "does not serve a ready model 'm'"),
    ("StatusCode.INTERNAL", "Stub process 'm_tokenizer_0_0' is not healthy.", ServerError, "is not healthy"),
])
def test_server_answers_map_to_errors_a_caller_can_act_on(status, message, kind, words):
    error = translate_error(InferenceServerException(message, status=status), ADDRESS, "m")
    assert type(error) is kind and words in str(error)


def test_keys_travel_as_triton_expects_them_per_protocol():
    keys = Keys(api_key="a" * 16, admin_key="b" * 16)
    assert keys.headers("http") == {"authorization": "Bearer " + "a" * 16, "bertserve-admin-key": "b" * 16}
    assert keys.headers("grpc") == {"triton-grpc-protocol-authorization": "Bearer " + "a" * 16,
                                    "triton-grpc-protocol-bertserve-admin-key": "b" * 16}
    assert Keys().headers("grpc") == {}
