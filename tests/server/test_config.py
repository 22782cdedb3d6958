"""ServerConfig's pure logic: the loopback configuration."""

from __future__ import annotations

import socket

from bertserve.server import ServerConfig


def test_loopback_listens_on_127_0_0_1_on_three_free_ports(tmp_path):
    config = ServerConfig.loopback(tmp_path, heal=False, api_key="k" * 16)
    assert (config.repository, config.host, config.heal, config.api_key) == (tmp_path, "127.0.0.1", False, "k" * 16)
    ports = config.ports.values()
    assert len(set(ports)) == 3
    for port in ports:  # free: each can be bound
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
