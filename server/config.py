"""Options of the embedded tritonserver, rendered to its command line in one place."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from bertserve import contract
from bertserve.errors import ConfigError

DEFAULT_STARTUP_TIMEOUT = 180.0
DEFAULT_STOP_TIMEOUT = 10.0  # as Docker gives a container between SIGTERM and SIGKILL
DEFAULT_PROBE_INTERVAL = 1.0
# Admin APIs: behind the admin key. Model config and statistics stay open: the SDK reads them
# (what a model computes, and server_status()), and they hold no secrets.
ADMIN_APIS = ("shared-memory", "model-repository", "trace", "logging")
# Repositories Triton reads from object storage itself (credentials from AWS_*, GOOGLE_*, AZURE_* variables).
OBJECT_STORAGE_SCHEMES = ("s3://", "gs://", "as://")


@dataclass(frozen=True)
class ServerConfig:
    """Where the server reads models from, where it listens, and who may do what."""

    repository: Union[Path, str]  # a folder, or an s3://, gs:// or as:// URL
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "0.0.0.0"
    api_key: Optional[str] = None  # when set, inference needs "Authorization: Bearer <api_key>"
    admin_key: Optional[str] = None  # admin APIs need it; a fresh one is made at each start when None
    heal: bool = True  # probe the models and reload one whose backend process died
    tritonserver: Optional[Path] = None  # an installed tritonserver (NGC image); None: the nvidia-pytriton wheel's
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT  # grace period for in-flight requests before the process is killed
    log_verbose: int = 0
    # Bytes of Triton's local response cache, None for none. Models whose config enables the cache (every exported
    # ensemble) then answer a request repeated exactly from it, without running the tokenizer or the encoder.
    cache_size: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("api_key", "admin_key"):
            contract.check_key(name, getattr(self, name))
        if self.cache_size is not None and not (isinstance(self.cache_size, int) and self.cache_size > 0):
            raise ConfigError(f"the response cache size must be a positive number of bytes, got {self.cache_size!r}; "
                              "leave it out to serve without a cache")

    @classmethod
    def loopback(cls, repository: Union[Path, str], **options: Any) -> ServerConfig:
        """A server for this machine alone, on 127.0.0.1 and ports free right now: tests, benchmarks, notebooks."""
        http, grpc, metrics = free_ports(3)
        return cls(**{"repository": repository, "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
                      "host": "127.0.0.1", **options})

    @property
    def remote(self) -> bool:
        """Whether the repository is in object storage rather than a local folder."""
        return is_object_storage(self.repository)

    def arguments(self, backend_directory: Path, admin_key: str, cache_directory: Optional[Path] = None) -> list[str]:
        """tritonserver command-line arguments (without the binary); `cache_directory` holds the server's cache
        implementations."""
        apis = ",".join(ADMIN_APIS)
        arguments = [
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            # Explicit control, every model loaded at start: the supervisor reloads a model through the
            # repository API, which the admin key keeps from everyone else.
            "--model-control-mode=explicit",
            "--load-model=*",
            f"--http-restricted-api={apis}:{contract.ADMIN_KEY_HEADER}={admin_key}",
            f"--grpc-restricted-protocol={apis}:{contract.ADMIN_KEY_HEADER}={admin_key}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--exit-timeout-secs={int(self.stop_timeout)}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.cache_size is not None:
            arguments.append(f"--cache-config=local,size={self.cache_size}")
            arguments += [f"--cache-directory={cache_directory}"] if cache_directory else []
        if self.api_key:
            bearer = f"{contract.API_KEY_HEADER}=Bearer {self.api_key}"
            arguments += [f"--http-restricted-api=inference:{bearer}", f"--grpc-restricted-protocol=inference:{bearer}"]
        return arguments

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports free on `host` right now, for servers started in tests and benchmarks."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_object_storage(repository: Union[Path, str]) -> bool:
    """Whether `repository` names object storage (s3://, gs://, as://) rather than a folder."""
    return isinstance(repository, str) and repository.startswith(OBJECT_STORAGE_SCHEMES)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def byte_size(text: str, what: str = "size") -> int:
    """A number of bytes from `text` such as "268435456", "256MB" or "1GiB"; a ConfigError naming `what` where it is
    not a positive size."""
    match = _SIZE.fullmatch(text)
    unit = match and _UNITS.get(match.group(2).upper())
    size = int(float(match.group(1)) * unit) if match and unit else 0
    if size < 1:
        raise ConfigError(f"{what} {text!r} is not a positive size: give bytes, or a number with KB, MB, GB, KiB, "
                          "MiB or GiB, e.g. 256MB; leave it out for no cache")
    return size

