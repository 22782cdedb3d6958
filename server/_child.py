"""What both process owners (`TritonServer`, `FrontDoor`) need of a child: it dies with its parent, its ports are
free before it starts, and its clients get an address they can reach."""

from __future__ import annotations

import ctypes
import signal
import socket


def die_with_parent() -> None:
    """In the child (`preexec_fn`): get SIGTERM when the parent dies, so a crashed owner never leaves an orphan."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host`:`port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("" if host == "0.0.0.0" else host, port))
        except OSError:
            return False
    return True


def client_host(host: str) -> str:
    """The address a local client dials for a server listening on `host` (all interfaces: localhost)."""
    return "localhost" if host in ("0.0.0.0", "::") else host
