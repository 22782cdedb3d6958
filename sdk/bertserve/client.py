"""`Encoder`: sentences in, vectors out, from a bertserve model on a Triton server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence, Union

import numpy as np

from ._transport import Address, Transport, open_transport, parse_address
from .errors import InvalidInputError, ModelNotFoundError, ServerError
from .info import ModelInfo

Vectors = Union[np.ndarray, list]

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 4


class Encoder:
    """Client for one embedding model served by bertserve.

    `Encoder("localhost:8001").encode(["First do it", "then do it right"])`
    returns a float32 array `[2, dim]`. The url's scheme picks the protocol
    (`grpc://`, `http://`); without one, `protocol` decides, gRPC by default.
    Large inputs are split into requests of at most the model's batch size and
    sent `concurrency` at a time; results keep input order. Every call is bounded
    by `timeout` seconds. One Encoder may be shared by many threads.
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        model: str | None = None,
        protocol: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int | None = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {concurrency!r}")
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size!r}")
        self.address: Address = parse_address(url, protocol)
        self.timeout = timeout
        self.concurrency = concurrency
        self._model = model
        self._batch_size = batch_size
        self._info: ModelInfo | None = None
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- public API ---------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Encode sentences: `[n, dim]` float32, or for token-level models a list of `[n_tokens, dim]` arrays."""
        payload = _validate_texts(texts)
        info = self.info()
        size = min(self._batch_size or info.max_batch_size, info.max_batch_size)
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
        outputs = ["embedding", "attention_mask"] if info.token_level else ["embedding"]
        if len(chunks) == 1:
            results = [self._infer(info.name, chunks[0], outputs)]
        else:
            results = list(self._executor().map(lambda chunk: self._infer(info.name, chunk, outputs), chunks))
        for chunk, result in zip(chunks, results):
            if len(result["embedding"]) != len(chunk):  # never hand back fewer vectors than inputs
                raise ServerError(
                    f"{self.address} returned {len(result['embedding'])} vectors for {len(chunk)} inputs"
                )
        if info.token_level:
            return [
                vectors[: int(mask.sum())]
                for result in results
                for vectors, mask in zip(result["embedding"], result["attention_mask"])
            ]
        return np.concatenate([result["embedding"] for result in results]).astype(np.float32, copy=False)

    def info(self) -> ModelInfo:
        """What the served model is: name, dimension, pooling, layers, normalisation, max length."""
        if self._info is None:
            name = self._model or self._single_model()
            try:
                config = self._transport().model_config(name)
            except ModelNotFoundError:
                served = self.models()
                raise ModelNotFoundError(
                    f"{self.address} does not serve a ready model {name!r}; it serves {served}"
                ) from None
            self._info = ModelInfo.from_parameters(name, config.get("parameters", {}))
        return self._info

    def models(self) -> list[str]:
        """Names of the bertserve embedding models the server has ready."""
        transport = self._transport()
        names = [m["name"] for m in transport.model_index() if m.get("state") == "READY"]
        return sorted(n for n in names if ModelInfo.is_bertserve_config(transport.model_config(n).get("parameters", {})))

    def close(self) -> None:
        """Release connections and worker threads. The Encoder cannot be used afterwards."""
        with self._lock:
            self._closed = True
            transports, self._transports = self._transports, []
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for transport in transports:
            transport.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Encoder({str(self.address)!r}, model={self._model!r})"

    # -- internals ----------------------------------------------------------

    def _single_model(self) -> str:
        names = self.models()
        if len(names) == 1:
            return names[0]
        if not names:
            raise ModelNotFoundError(f"{self.address} serves no ready bertserve model; export one with `bertserve export`")
        raise ModelNotFoundError(f"{self.address} serves several models {names}; pick one with Encoder(url, model=...)")

    def _infer(self, model: str, texts: list[bytes], outputs: list[str]) -> dict[str, np.ndarray]:
        return self._transport().infer(model, texts, outputs)

    def _transport(self) -> Transport:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            with self._lock:
                if self._closed:
                    raise InvalidInputError("this Encoder is closed; create a new one")
                transport = open_transport(self.address, self.timeout)
                self._transports.append(transport)
            self._local.transport = transport
        return transport

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="bertserve")
            return self._pool


def _validate_texts(texts: Sequence[str]) -> list[bytes]:
    """Check the input list and encode it to UTF-8, naming the first bad item."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError("encode() takes a list of strings; wrap a single sentence in a list: encode([text])")
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise InvalidInputError(f"encode() takes a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise InvalidInputError("encode() got an empty list; pass at least one sentence")
    payload = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"item {i} is {type(text).__name__}, not str; every item must be a sentence string")
        if not text.strip():
            raise InvalidInputError(f"item {i} is an empty string; remove it or give it text")
        try:
            payload.append(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"item {i} cannot be encoded as UTF-8 ({exc.reason}); remove lone surrogates") from None
    return payload
