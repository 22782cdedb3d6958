"""What both process owners (`TritonServer`, `FrontDoor`) need of a child: it dies with its parent, its ports are
free before it starts, and its clients get an address they can reach."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

# The owner's process id, given to a Python child that follows its parent itself (`follow_parent`).
PARENT_VARIABLE = "BERTSERVE_PARENT_PID"


def die_with_parent() -> None:
    """In the child (`preexec_fn`): get SIGTERM when the parent dies, so a crashed owner never leaves an orphan."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def follow_parent() -> None:
    """In a Python child, first thing: die with the owner named in `PARENT_VARIABLE`, or exit now if it is gone.

    Such a child is started without `preexec_fn`: a fork that runs Python in the child copies the owner's gRPC
    state, whose pollers then fail ("epoll_wait error: Bad file descriptor") and can kill the child before it
    runs; without a preexec_fn, CPython starts the child with vfork, which runs none of that."""
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is None:
        return
    die_with_parent()
    if not parent.isdigit() or os.getppid() != int(parent):  # the owner died before the line above
        sys.exit("bertserve: the process that started this one is gone")


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
