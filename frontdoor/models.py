"""The served models as the front doors see them: one thread-safe SDK `Encoder` each, and real readiness."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from bertserve import Encoder
from bertserve.errors import (
    AuthenticationError,
    BertserveError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    RequestTimeoutError,
    ServerBusyError,
    ServerUnavailableError,
)

from .config import FrontDoorConfig

T = TypeVar("T")
_NAMES_TTL = 5.0  # seconds a model list is reused
_READY_TTL = 2.0  # seconds a readiness answer is reused (probes may come often)
_log = logging.getLogger("bertserve.frontdoor")

# What the doors tell their clients when the failure is not theirs to fix by changing the input.
BUSY = "The server is at capacity; retry after a moment"
UNAVAILABLE = "The embedding server is not reachable or did not answer in time; retry later"
KEY_REFUSED = "The front door is not allowed in by the embedding server (check its --api-key)"
FAILED = "The server failed to encode the input"


def client_message(exc: Exception) -> str:
    """What a door tells its client about `exc`, and logs what it does not tell.

    Never `str(exc)`: an SDK error's message names the Triton address the door uses, which its clients must not
    learn; `detail` is the same message without it. Failures the client cannot fix get a fixed sentence.
    """
    if isinstance(exc, ServerBusyError):
        return BUSY
    if isinstance(exc, (ServerUnavailableError, RequestTimeoutError)):
        return UNAVAILABLE
    if isinstance(exc, InvalidInputError):
        return exc.detail
    if isinstance(exc, AuthenticationError):
        _log.error("Triton refused the front door's key: %s", exc)
        return KEY_REFUSED
    if isinstance(exc, BertserveError):
        _log.error("encoding failed: %s", exc)
        return exc.detail if isinstance(exc, ModelNotFoundError) else FAILED
    _log.error("unexpected failure", exc_info=exc)
    return FAILED


def _unready(exc: BertserveError) -> str:
    """Why a readiness inference failed, in one sentence without the Triton address."""
    if isinstance(exc, ServerUnavailableError) and not isinstance(exc, ModelUnavailableError):
        return "the Triton server is not reachable"
    if isinstance(exc, RequestTimeoutError):
        return "the Triton server did not answer in time"
    detail = (exc.detail.splitlines() or [""])[0][:200]  # the model's own message (sanitised by the backends)
    return f"a model did not answer an inference ({type(exc).__name__}: {detail})"


class Models:
    def __init__(self, config: FrontDoorConfig) -> None:
        self.config = config
        self._encoders: dict[str, Encoder] = {}
        self._probes: dict[str, Encoder] = {}  # readiness checks: no retries, so a dead backend shows at once
        self._lock = threading.Lock()
        self._names: tuple[float, list[str]] = (0.0, [])
        self._ready: tuple[float, Optional[str]] = (0.0, None)
        # Blocking gRPC calls run here, never on the event loop.
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="frontdoor")

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))

    def encoder(self, name: Optional[str] = None) -> Encoder:
        """The encoder of model `name` (default: the bert-as-service model, else the one served)."""
        name = name or self.config.bert_as_service_model or self._only()
        if name not in self._encoders and name not in self.names():
            raise ModelNotFoundError(f"no model {name!r} is served here; GET /v1/models lists them")
        return self._cached(self._encoders, name, timeout=self.config.timeout)

    def _cached(self, cache: dict[str, Encoder], name: str, **options: Any) -> Encoder:
        encoder = cache.get(name)
        if encoder is None:
            with self._lock:
                encoder = cache.get(name)
                if encoder is None:
                    encoder = cache[name] = Encoder(self.config.triton_url, model=name, api_key=self.config.api_key,
                                                    **options)
        return encoder

    def names(self) -> list[str]:
        """The bertserve embedding models Triton serves and has ready."""
        fetched, names = self._names
        if time.monotonic() - fetched > _NAMES_TTL or not names:
            with Encoder(self.config.triton_url, timeout=min(10.0, self.config.timeout),
                         api_key=self.config.api_key) as probe:
                names = probe.models()
            self._names = (time.monotonic(), names)
        return names

    def problem(self) -> Optional[str]:
        """Why the service cannot serve right now, or None: a real one-sentence inference through every model
        (Triton's readiness stays true while a backend process is dead)."""
        checked, problem = self._ready
        if time.monotonic() - checked < _READY_TTL:
            return problem
        try:
            names = self.names()
            problem = None if names else "no embedding model is ready"
            for name in names:
                self._cached(self._probes, name, timeout=min(10.0, self.config.timeout), retries=0).encode(["ready?"])
        except BertserveError as exc:
            problem = _unready(exc)
        self._ready = (time.monotonic(), problem)
        return problem

    def _only(self) -> str:
        names = self.names()
        if len(names) != 1:
            raise ModelNotFoundError(f"several models are served ({names}); start the front door with a model name")
        return names[0]

    def close(self) -> None:
        for encoder in (*self._encoders.values(), *self._probes.values()):
            encoder.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
