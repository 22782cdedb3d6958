"""The served models as the front doors see them: one thread-safe SDK `Encoder` each, real readiness, and
small concurrent requests for a model gathered into shared Triton calls (`Models.encode`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Optional, TypeVar

import numpy as np

from bertserve import Encoder
from bertserve.client import Encoded
from bertserve.contract import Task
from bertserve.errors import (
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
from bertserve.health import probe
from bertserve.info import ModelInfo
from bertserve.results import Classified, Ranked, SparseVector

from .config import FrontDoorConfig

T = TypeVar("T")
_NAMES_TTL = 5.0  # seconds a model list is reused
_READY_TTL = 2.0  # seconds a readiness answer is reused (probes may come often)
# Triton calls per model at once from `Models.encode`: two, so that Triton (two instances per Python model) is
# never idle while the door answers the last call and the requests that came meanwhile wait for the next.
_IN_FLIGHT = 2
_MERGED_CHARS = 1 << 18  # text one shared call carries at most: far under the tokenizer's byte limit per request
# What one bad item makes of a shared call: each request is then sent alone, to get its own answer.
_ITEM_FAILURES = (InvalidInputError, ServerError)
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


@dataclass(frozen=True)
class EncodeOptions:
    """A request's options of `Encoder.encode_detailed`, by its keyword names; the defaults are the SDK's. Requests
    share Triton calls only with requests of equal options (they are a key)."""

    prompt_name: Optional[str] = None
    prompt: Optional[str] = None
    truncation_direction: str = "right"
    long_input: str = "truncate"
    output_dtype: str = "float32"

    def keywords(self) -> dict[str, Any]:
        """The options that differ from the SDK's defaults, as keyword arguments (none for a plain request)."""
        default = EncodeOptions()
        return {name: value for name, value in asdict(self).items() if value != getattr(default, name)}

    @property
    def chunked(self) -> bool:
        """Whether over-long inputs are encoded in windows: a second round of Triton calls, and a window bound."""
        return self.long_input == "chunk"


PLAIN = EncodeOptions()


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
        self._infos: dict[str, ModelInfo] = {}
        self._coalescers: dict[tuple[str, EncodeOptions], _Coalescer] = {}
        # Blocking gRPC calls run here, never on the event loop.
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="frontdoor")

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))

    async def info(self, name: str) -> ModelInfo:
        """What model `name` serves (ModelNotFoundError if it is not served): asked of Triton in a worker thread
        once, then known without leaving the event loop (the SDK's Encoder keeps it as long)."""
        info = self._infos.get(name)
        if info is None:
            # A lookup makes a few SDK calls, each bounded by the timeout; this bound only keeps a hang out.
            info = await _within(4 * self.config.timeout, self.call(lambda: self.encoder(name).info()))
            self._infos[name] = info
        return info

    async def encode(self, name: str, texts: list[str], options: EncodeOptions = PLAIN) -> Encoded:
        """`texts` encoded by model `name` with `options`, in order, with their own token counts. Requests of up to
        the model's max_batch_size items and the same options that arrive while Triton calls of theirs are in flight
        share the next call. Requests that go alone: with long_input "chunk" (windows are bounded per request) and
        with a `prompt` text (any text: a queue for each would have no bound)."""
        if options.chunked or options.prompt is not None:
            return await self._alone(name, texts, options)
        coalescer = self._coalescers.get((name, options))
        if coalescer is None:
            info = await self.info(name)
            coalescer = self._coalescers.setdefault(
                (name, options), _Coalescer(self.encoder(name), info, self.call, self.config.timeout, options))
        return await coalescer.encode(texts)

    async def _alone(self, name: str, texts: list[str], options: EncodeOptions) -> Encoded:
        """`encode` in calls of its own: the texts, then (long_input "chunk") at most max_windows windows."""
        info = await self.info(name)
        encoder = self.encoder(name)
        bound = _bound(len(texts), info.max_batch_size, encoder.concurrency, self.config.timeout)
        keywords = options.keywords()
        if options.chunked:
            bound += _bound(self.config.max_windows, info.max_batch_size, encoder.concurrency, self.config.timeout)
            keywords["max_windows"] = self.config.max_windows
        return await _within(bound, self.call(encoder.encode_detailed, texts, **keywords))

    async def rerank(self, name: str, query: str, documents: list[str]) -> list[Ranked]:
        """Every document of `documents` ranked against `query` by model `name`, best first."""
        return await self._task(name, len(documents), "rerank", query, documents)

    async def classify(self, name: str, texts: list[str], raw_scores: bool) -> list[Classified]:
        """Every label's score for each of `texts`, by model `name`, in order."""
        return await self._task(name, len(texts), "classify", texts, raw_scores=raw_scores)

    async def encode_sparse(self, name: str, texts: list[str]) -> list[SparseVector]:
        """The sparse vector of each of `texts`, by model `name`, in order."""
        return await self._task(name, len(texts), "encode_sparse", texts)

    async def _task(self, name: str, items: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """The SDK's `method` of model `name`'s encoder on `items` items, in a worker thread and bounded in time.
        The door reports truncation itself (a header), so the SDK's TruncationWarning is ignored (`service.py`)."""
        info = await self.info(name)
        encoder = self.encoder(name)  # cached by `info`: no lookup on the event loop
        bound = _bound(items, info.max_batch_size, encoder.concurrency, self.config.timeout)
        return await _within(bound, self.call(getattr(encoder, method), *args, **kwargs))

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
            problem = None if names else "no model is ready"
            for name in names:
                probe(self._cached(self._probes, name, timeout=min(10.0, self.config.timeout), retries=0))
        except BertserveError as exc:
            problem = _unready(exc)
        self._ready = (time.monotonic(), problem)
        return problem

    def _only(self) -> str:
        """The one embedding model served (bert-as-service's protocol has no model names)."""
        names = [name for name in self.names()
                 if self._cached(self._encoders, name, timeout=self.config.timeout).info().task == Task.EMBED]
        if len(names) != 1:
            raise ModelNotFoundError(f"several models are served ({names}); start the front door with a model name")
        return names[0]

    def close(self) -> None:
        for encoder in (*self._encoders.values(), *self._probes.values()):
            encoder.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(eq=False)
class _Waiting:
    """One HTTP request's texts, waiting for a Triton call, and where its answer goes."""

    texts: list[str]
    answer: asyncio.Future
    chars: int = field(init=False)

    def __post_init__(self) -> None:
        self.chars = sum(len(text) for text in self.texts)


class _Coalescer:
    """One model's small requests: sent at once while fewer than `_IN_FLIGHT` Triton calls are in flight, else
    queued; each call that ends sends the queue's head as one Triton request of up to max_batch_size items and
    hands each request its own slice. Triton's per-request cost (gRPC, the ensemble, each Python backend's round
    trip) is then paid once per call rather than once per HTTP request."""

    def __init__(self, encoder: Encoder, info: ModelInfo, call: Callable[..., Awaitable[Encoded]],
                 timeout: float, options: EncodeOptions = PLAIN) -> None:
        self._encoder, self._info, self._call = encoder, info, call
        self._keywords = options.keywords()
        self._capacity = info.max_batch_size
        self._waiting: deque[_Waiting] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self._timeout = timeout
        self._call_bound = _bound(1, 1, 1, timeout)
        # One call ahead in the queue, then its own (or its resend alone): past that something hangs.
        self._patience = 3 * self._call_bound

    async def encode(self, texts: list[str]) -> Encoded:
        """`texts` encoded, alone or in a call shared with the requests waiting beside them."""
        if len(texts) > self._capacity:  # several Triton requests anyway: the SDK splits it and sends them together
            return await self._encoded(texts, _bound(len(texts), self._capacity, self._encoder.concurrency,
                                                     self._timeout))
        waiting = _Waiting(texts, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._dispatch()
        # On timeout `wait_for` cancels the future, and a request not yet sent is left out of every call.
        return await _within(self._patience, waiting.answer)

    def _dispatch(self) -> None:
        while self._in_flight < _IN_FLIGHT:
            group = self._next_group()
            if not group:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_group(self) -> list[_Waiting]:
        """The requests at the head of the queue, in arrival order, that fit one call."""
        group: list[_Waiting] = []
        items = chars = 0
        while self._waiting:
            head = self._waiting[0]
            if head.answer.done():  # its client gave up waiting
                self._waiting.popleft()
                continue
            if group and (items + len(head.texts) > self._capacity or chars + head.chars > _MERGED_CHARS):
                break
            group.append(self._waiting.popleft())
            items, chars = items + len(head.texts), chars + head.chars
        return group

    async def _send(self, group: list[_Waiting]) -> None:
        try:
            encoded = await self._encoded([text for waiting in group for text in waiting.texts], self._call_bound)
        except Exception as exc:
            if len(group) > 1 and type(exc) in _ITEM_FAILURES:
                # An item of one request failed the shared call: each request alone gets what it would have got.
                await asyncio.gather(*(self._alone(waiting) for waiting in group))
            else:  # the server's state, not an item's: the same answer for all
                for waiting in group:
                    _settle(waiting.answer, error=exc)
        else:
            start = 0
            for waiting in group:
                stop = start + len(waiting.texts)
                _settle(waiting.answer, _part(encoded, self._info, start, stop))
                start = stop
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _alone(self, waiting: _Waiting) -> None:
        try:
            _settle(waiting.answer, await self._encoded(waiting.texts, self._call_bound))
        except Exception as exc:
            _settle(waiting.answer, error=exc)

    async def _encoded(self, texts: list[str], bound: float) -> Encoded:
        return await _within(bound, self._call(self._encoder.encode_detailed, texts, **self._keywords))


def _bound(items: int, batch: int, concurrency: int, timeout: float) -> float:
    """Seconds the SDK may take for `items` items: it sends them in requests of `batch`, `concurrency` at a time,
    and retries a busy server until `timeout` passes, whose last try may run a full `timeout` more."""
    calls = -(-items // batch)
    rounds = -(-calls // concurrency)
    return rounds * 2 * timeout


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or RequestTimeoutError (a 503, retry later) after `seconds`: no await hangs."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(f"no answer from the embedding server within {seconds:.0f} s; retry later") from None


def _settle(answer: asyncio.Future, result: Optional[Encoded] = None, error: Optional[Exception] = None) -> None:
    """Answer a waiting request, unless its client stopped waiting."""
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


def _part(encoded: Encoded, info: ModelInfo, start: int, stop: int) -> Encoded:
    """Items `start:stop` of a shared call's answer, with their own usage as `Encoder.encode_detailed` counts it."""
    counts, truncated = encoded.token_counts[start:stop], encoded.truncated[start:stop]
    return Encoded(vectors=encoded.vectors[start:stop], token_counts=counts, truncated=truncated,
                   tokens_seen=int(np.where(truncated, info.max_seq_len, counts).sum()))
