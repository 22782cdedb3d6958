"""ServerConfig's pure logic: the loopback configuration, and the keys it takes."""

from __future__ import annotations

import socket

import pytest

from bertserve.errors import ConfigError
from bertserve.server import ServerConfig


def test_loopback_listens_on_127_0_0_1_on_three_free_ports(tmp_path):
    config = ServerConfig.loopback(tmp_path, heal=False, api_key="k" * 16)
    assert (config.repository, config.host, config.heal, config.api_key) == (tmp_path, "127.0.0.1", False, "k" * 16)
    ports = config.ports.values()
    assert len(set(ports)) == 3
    for port in ports:  # free: each can be bound
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


# Triton reads a key inside its flag syntax, `--http-restricted-api=apis:header=value`: a ',' would add APIs, a ':'
# or '=' would rewrite the header, a space would split the flag. Short keys are guessable.
REFUSED_KEYS = ["k" * 15, "", "key-with,comma-01", "key-with:colon-01", "key-with=equals01", "key with space-01",
                "key-with\nnewline-01", "k" * 16 + "\n", "ключ-не-ascii-0123"]


@pytest.mark.parametrize("name", ["api_key", "admin_key"])
@pytest.mark.parametrize("key", REFUSED_KEYS, ids=repr)
def test_keys_that_would_break_the_flag_syntax_or_are_short_are_refused(tmp_path, name, key):
    with pytest.raises(ConfigError, match=f"{name} must be at least 16 letters, digits or '-_.~\\+/' characters"):
        ServerConfig(tmp_path, **{name: key})


@pytest.mark.parametrize("key", ["k" * 16, "Az09-_.~+/" * 2, "x" * 200])
def test_keys_of_16_or_more_safe_characters_are_taken_into_the_flags(tmp_path, key):
    config = ServerConfig(tmp_path, api_key=key, admin_key=key)
    flags = config.arguments(tmp_path, config.admin_key)
    assert f"--grpc-restricted-protocol=inference:authorization=Bearer {key}" in flags
    assert sum(key in flag for flag in flags) == 4  # both keys, in the HTTP and gRPC restriction each
