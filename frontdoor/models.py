"""The served models as the front doors see them: one thread-safe SDK `Encoder` each, and real readiness."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from bertserve import Encoder
from bertserve.errors import BertserveError, ModelNotFoundError, ServerUnavailableError

from .config import FrontDoorConfig

T = TypeVar("T")
_NAMES_TTL = 5.0  # seconds a model list is reused
_READY_TTL = 2.0  # seconds a readiness answer is reused (probes may come often)


class Models:
    def __init__(self, config: FrontDoorConfig) -> None:
        self.config = config
        self._encoders: dict[str, Encoder] = {}
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
        encoder = self._encoders.get(name)
        if encoder is None:
            if name not in self.names():
                raise ModelNotFoundError(f"no model {name!r} is served here; GET /v1/models lists them")
            with self._lock:
                encoder = self._encoders.get(name)
                if encoder is None:
                    encoder = self._encoders[name] = Encoder(
                        self.config.triton_url, model=name, timeout=self.config.timeout, api_key=self.config.api_key)
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
                self.encoder(name).encode(["ready?"])
        except ServerUnavailableError:
            problem = "the Triton server is not reachable"
        except BertserveError as exc:  # the model's own message (sanitised by the backends), first line
            problem = f"a model did not answer an inference ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        self._ready = (time.monotonic(), problem)
        return problem

    def _only(self) -> str:
        names = self.names()
        if len(names) != 1:
            raise ModelNotFoundError(f"several models are served ({names}); start the front door with a model name")
        return names[0]

    def close(self) -> None:
        for encoder in self._encoders.values():
            encoder.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
