"""The exceptions bertserve raises. Catch `BertserveError` for all of them.

Each message says what happened and what to do about it. Where a built-in
exception fits (`ValueError` for bad input, `TimeoutError` for a deadline),
the bertserve error also derives from it, so generic handlers keep working.
"""

from __future__ import annotations


class BertserveError(Exception):
    """Base class of every error bertserve raises on purpose.

    `detail` is the message without the address the client used: what a front door may pass on to its own
    clients, who must not learn the service's internal addresses. It is the whole message where that holds no address.
    """

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = message if detail is None else detail


class ConfigError(BertserveError, ValueError):
    """An option or setting that cannot work (a bad port, a key, a runtime the backend cannot run); the message
    names it and what to give instead."""


class InvalidInputError(BertserveError, ValueError):
    """The input cannot be encoded: wrong type, empty, or malformed."""


class ServerUnavailableError(BertserveError, ConnectionError):
    """No Triton server answered at the address tried, or (`ModelUnavailableError`) it cannot run the model now:
    either way a retry later may succeed."""


class ModelUnavailableError(ServerUnavailableError):
    """The server holds the model but cannot run it now (being reloaded, or a backend process died), still after
    retries within the timeout. Unlike `ModelNotFoundError`, the model exists: retrying later may succeed."""


class RequestTimeoutError(BertserveError, TimeoutError):
    """The server did not answer within the client's timeout."""


class ServerBusyError(BertserveError):
    """The server is at capacity and turned the request away, still after retries within the timeout."""


class AuthenticationError(BertserveError, PermissionError):
    """The server requires a key (the API key for inference, the admin key for admin APIs) and got none or a wrong one."""


class ModelNotFoundError(BertserveError, LookupError):
    """The server is up but does not serve the requested model (or none, or several)."""


class ServerError(BertserveError):
    """The server received the request and refused or failed it; the message is the server's."""


class ExportError(BertserveError):
    """A model folder could not be exported to a Triton model repository."""


class ServerStartError(BertserveError):
    """The local tritonserver could not be started or did not become ready."""
