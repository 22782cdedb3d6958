"""Server addresses: scheme or argument picks the protocol; bad ones are clear errors."""

from __future__ import annotations

import pytest

from bertserve import Encoder
from bertserve._transport import parse_address
from bertserve.errors import InvalidInputError


@pytest.mark.parametrize(
    "url, protocol, expected",
    [
        ("localhost:8001", None, "grpc://localhost:8001"),
        ("localhost:8000", "http", "http://localhost:8000"),
        ("http://10.0.0.5:9000", None, "http://10.0.0.5:9000"),
        ("grpc://example", None, "grpc://example:8001"),
        ("http://example", None, "http://example:8000"),
    ],
)
def test_parse(url, protocol, expected):
    assert str(parse_address(url, protocol)) == expected


@pytest.mark.parametrize(
    "url, protocol, message",
    [
        ("", None, "non-empty"),
        ("ftp://host:1", None, "grpc:// or http://"),
        ("grpc://host:1", "http", "make them agree"),
        ("host:1", "udp", "protocol must be one of"),
        ("host:notaport", None, "invalid port"),
    ],
)
def test_bad_addresses(url, protocol, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_address(url, protocol)


@pytest.mark.parametrize("option", [{"timeout": 0}, {"concurrency": 0}, {"batch_size": 0}])
def test_bad_client_options(option):
    with pytest.raises(InvalidInputError):
        Encoder("localhost:1", **option)
