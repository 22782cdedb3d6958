"""gRPC and HTTP access to Triton behind one small interface, with errors translated.

tritonclient's client objects are not thread-safe (the HTTP one is bound to the
gevent hub of the thread that made it), so the Encoder keeps one transport per
thread; a transport itself is used by one thread only.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol
from urllib.parse import urlsplit

import numpy as np

from . import contract
from .errors import (
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

PROTOCOLS = ("grpc", "http")
_DEFAULT_PORTS = {"grpc": 8001, "http": 8000}


@dataclass(frozen=True)
class Address:
    """Where the server listens and how to talk to it."""

    protocol: str
    host: str
    port: int

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}://{self.hostport}"


def parse_address(url: str, protocol: str | None = None) -> Address:
    """`grpc://h:p`, `http://h:p`, or `h:p` with `protocol` (gRPC when not given)."""
    if not isinstance(url, str) or not url:
        raise InvalidInputError(f"server url must be a non-empty string like 'localhost:8001', got {url!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise InvalidInputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    parts = urlsplit(url if "://" in url else f"//{url}")
    scheme = parts.scheme or protocol or "grpc"
    if scheme not in PROTOCOLS:
        raise InvalidInputError(f"url scheme must be grpc:// or http://, got {url!r}")
    if protocol is not None and scheme != protocol:
        raise InvalidInputError(f"url {url!r} says {scheme} but protocol={protocol!r}; give one or make them agree")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise InvalidInputError(f"url {url!r} has an invalid port") from None
    if not parts.hostname:
        raise InvalidInputError(f"url {url!r} has no host; write it like 'localhost:8001'")
    return Address(scheme, parts.hostname, port)


@dataclass(frozen=True)
class Keys:
    """What a restricted server asks for: the inference API key, and the admin key for admin APIs."""

    api_key: Optional[str] = None
    admin_key: Optional[str] = None

    def headers(self, protocol: str) -> dict[str, str]:
        headers = {}
        if self.api_key:
            headers[contract.API_KEY_HEADER] = f"Bearer {self.api_key}"
        if self.admin_key:
            headers[contract.ADMIN_KEY_HEADER] = self.admin_key
        # Triton's restricted gRPC protocols read their headers under a prefix; HTTP takes them as they are.
        prefix = contract.GRPC_RESTRICTED_PREFIX if protocol == "grpc" else ""
        return {prefix + name: value for name, value in headers.items()}


class Transport(Protocol):
    address: Address

    def server_ready(self) -> bool: ...

    def model_ready(self, model: str) -> bool: ...

    def model_config(self, model: str) -> dict[str, Any]: ...

    def model_index(self) -> list[dict[str, Any]]: ...

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]: ...

    def server_metadata(self) -> dict[str, Any]: ...

    def statistics(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def open_transport(address: Address, timeout: float, keys: Keys = Keys()) -> Transport:
    if address.protocol == "grpc":
        return _GrpcTransport(address, timeout, keys)
    return _HttpTransport(address, timeout, keys)


_DATATYPES = {np.dtype(np.object_): "BYTES", np.dtype(np.bool_): "BOOL", np.dtype(np.int64): "INT64"}


def _input_tensors(module: Any, inputs: dict[str, np.ndarray]) -> list[Any]:
    tensors = []
    for name, array in inputs.items():
        datatype = _DATATYPES.get(array.dtype, "FP32")
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


class _GrpcTransport:
    def __init__(self, address: Address, timeout: float, keys: Keys) -> None:
        import tritonclient.grpc as grpcclient

        self._mod = grpcclient
        self.address = address
        self._timeout = timeout
        self._headers = keys.headers("grpc")
        self._client = grpcclient.InferenceServerClient(address.hostport)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._client, method)(*args, headers=self._headers, client_timeout=self._timeout, **kwargs)

    def server_ready(self) -> bool:
        with _translated(self.address):
            return self._call("is_server_ready")

    def model_ready(self, model: str) -> bool:
        with _translated(self.address, model):
            return self._call("is_model_ready", model)

    def model_config(self, model: str) -> dict[str, Any]:
        with _translated(self.address, model):
            return self._call("get_model_config", model, as_json=True)["config"]

    def model_index(self) -> list[dict[str, Any]]:
        with _translated(self.address):
            return self._call("get_model_repository_index", as_json=True).get("models", [])

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        requested = [self._mod.InferRequestedOutput(name) for name in outputs]
        with _translated(self.address, model):
            result = self._call("infer", model, _input_tensors(self._mod, inputs), outputs=requested)
        return {name: result.as_numpy(name) for name in outputs}

    def server_metadata(self) -> dict[str, Any]:
        with _translated(self.address):
            return self._call("get_server_metadata", as_json=True)

    def statistics(self) -> list[dict[str, Any]]:
        with _translated(self.address):
            stats = self._call("get_inference_statistics", as_json=True)
        return stats.get("model_stats", [])

    def close(self) -> None:
        self._client.close()


class _HttpTransport:
    def __init__(self, address: Address, timeout: float, keys: Keys) -> None:
        import tritonclient.http as httpclient

        self._mod = httpclient
        self.address = address
        self._headers = keys.headers("http")
        self._client = httpclient.InferenceServerClient(
            address.hostport, connection_timeout=timeout, network_timeout=timeout
        )

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._client, method)(*args, headers=self._headers, **kwargs)

    def server_ready(self) -> bool:
        with _translated(self.address):
            return self._call("is_server_ready")

    def model_ready(self, model: str) -> bool:
        with _translated(self.address, model):
            return self._call("is_model_ready", model)

    def model_config(self, model: str) -> dict[str, Any]:
        with _translated(self.address, model):
            return self._call("get_model_config", model)

    def model_index(self) -> list[dict[str, Any]]:
        with _translated(self.address):
            return self._call("get_model_repository_index")

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        requested = [self._mod.InferRequestedOutput(name, binary_data=True) for name in outputs]
        with _translated(self.address, model):
            result = self._call("infer", model, _input_tensors(self._mod, inputs), outputs=requested)
        return {name: result.as_numpy(name) for name in outputs}

    def server_metadata(self) -> dict[str, Any]:
        with _translated(self.address):
            return self._call("get_server_metadata")

    def statistics(self) -> list[dict[str, Any]]:
        with _translated(self.address):
            return self._call("get_inference_statistics").get("model_stats", [])

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # gevent refuses a close from another thread; the socket dies with the object
            pass


@contextmanager
def _translated(address: Address, model: str | None = None) -> Iterator[None]:
    """Turn tritonclient and socket exceptions into bertserve errors."""
    try:
        yield
    except BertserveError:
        raise
    except Exception as exc:
        raise translate_error(exc, address, model) from exc
    except BaseException as exc:  # gevent.Timeout derives from BaseException
        if type(exc).__module__.startswith("gevent"):
            raise translate_error(TimeoutError(str(exc)), address, model) from exc
        raise


# Triton's words for a restricted API, a full queue and a request timed out in the queue.
_RESTRICTED = "is restricted, expecting header"
_BUSY = ("Exceeds maximum queue size", "Request timeout expired")
# A model Triton holds but cannot run now: being loaded or unloaded (no version ready), or its Python backend
# process died ("Stub process '<model>_0_0' is not healthy", until the supervisor reloads it). Worth a retry,
# unlike "Request for unknown model: 'x' is not found", a name the server does not hold at all.
_MODEL_UNAVAILABLE = ("has no available versions", "is not at ready state", "is not healthy")
_SERVER_NOT_READY = "Server not ready"  # Triton is starting or shutting down


def translate_error(exc: Exception, address: Address, model: str | None) -> BertserveError:
    from tritonclient.utils import InferenceServerException

    def unreachable(why: object) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"could not reach a Triton server at {address}: start one with `bertserve serve`, "
            f"or check the address and port ({why})", detail="the Triton server is not reachable")

    def timed_out() -> RequestTimeoutError:
        advice = "did not answer within the timeout; raise `timeout=` or check the server's load"
        return RequestTimeoutError(f"{address} {advice}", detail=f"the Triton server {advice}")

    if isinstance(exc, (socket.timeout, TimeoutError)):
        return timed_out()
    if isinstance(exc, (ConnectionError, OSError)):
        return unreachable(exc)
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = exc.message() or str(exc)
        if _RESTRICTED in message:
            return _restricted(address, message)
        if any(words in message for words in _BUSY):
            busy = (f"is at capacity and turned the request away ({message}); "
                    "it was retried until the timeout: retry later, or add server capacity")
            return ServerBusyError(f"{address} {busy}", detail=f"the server {busy}")
        if any(words in message for words in _MODEL_UNAVAILABLE):
            unavailable = (f"{f'model {model!r}' if model else 'the model'} is unavailable: the server holds it but "
                           f"cannot run it now ({message}); it is being reloaded, or its backend process died and a "
                           "server without healing (`bertserve serve` heals) needs a restart: retry later, or check "
                           "the server's log")
            return ModelUnavailableError(f"{address}: {unavailable}", detail=unavailable)
        # CANCELLED from the server's side: it is shutting down and dropped the call.
        if "UNAVAILABLE" in status or "CANCELLED" in status or _SERVER_NOT_READY in message:
            return unreachable(message)
        if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
            return timed_out()
        if model is not None and ("unknown model" in message or "is not found" in message):
            return ModelNotFoundError(f"{address} does not serve a model {model!r} ({message})",
                                      detail=f"does not serve a model {model!r} ({message})")
        if "INVALID_ARGUMENT" in status or status == "400":
            return InvalidInputError(f"{address} refused the input: {message}", detail=f"refused the input: {message}")
        return ServerError(f"{address} refused the request: {message}", detail=f"refused the request: {message}")
    return ServerError(f"request to {address} failed: {exc!r}", detail="the request to the Triton server failed")


def _restricted(address: Address, message: str) -> AuthenticationError:
    if contract.ADMIN_KEY_HEADER in message:
        advice = ("keeps this for administrators: pass admin_key= (or set BERTSERVE_ADMIN_KEY) with the key "
                  "`bertserve serve` wrote to its admin-key file")
    else:
        advice = ("requires an API key, and this one is missing or wrong: pass Encoder(url, api_key=...) "
                  "(or set BERTSERVE_API_KEY; `bertserve encode --api-key`)")
    return AuthenticationError(f"{address} {advice}", detail=f"the server {advice}")
