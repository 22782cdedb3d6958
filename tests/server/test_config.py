"""ServerConfig's pure logic: the loopback configuration, and the keys it takes."""

from __future__ import annotations

import socket

import pytest

from bertserve.errors import ConfigError
from bertserve.server import ServerConfig, byte_size


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


@pytest.mark.parametrize("text, size", [("268435456", 268435456), ("256MB", 256_000_000), ("256 mib", 256 << 20),
                                        ("1GiB", 1 << 30), ("1.5KB", 1500)])
def test_cache_sizes_are_read_with_their_units(text, size):
    assert byte_size(text, "--cache-size") == size


@pytest.mark.parametrize("text", ["0", "0MB", "-5", "lots", "12 parsecs", ""])
def test_a_cache_size_that_is_not_positive_is_refused_naming_it(text):
    with pytest.raises(ConfigError, match=f"--cache-size {text!r} is not a positive size"):
        byte_size(text, "--cache-size")


@pytest.mark.parametrize("size", [0, -1, 1.5])
def test_a_server_cache_of_no_bytes_is_refused(tmp_path, size):
    with pytest.raises(ConfigError, match="the response cache size must be a positive number of bytes"):
        ServerConfig(tmp_path, cache_size=size)


def test_the_cache_reaches_tritonservers_flags_only_when_asked_for(tmp_path):
    assert not any(flag.startswith("--cache") for flag in ServerConfig(tmp_path).arguments(tmp_path, "k" * 16, tmp_path))
    flags = ServerConfig(tmp_path, cache_size=1 << 20).arguments(tmp_path, "k" * 16, tmp_path / "caches")
    assert {f"--cache-config=local,size={1 << 20}", f"--cache-directory={tmp_path / 'caches'}"} <= set(flags)
