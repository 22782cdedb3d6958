"""`Encoder`: sentences in, vectors (or rankings, labels, sparse vectors) out, from a bertserve model on a Triton
server."""

from __future__ import annotations

import asyncio
import json
import numbers
import os
import random
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np

from . import contract
from ._transport import Address, Keys, Transport, open_transport, parse_address
from ._windows import Window, combine, plan_windows
from .errors import (
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    ServerBusyError,
    ServerError,
    ServerUnavailableError,
)
from .info import ModelInfo
from .quantize import OutputDtype, output_dtype as _output_dtype, quantize
from .results import Classified, Label, Ranked, SparseVector
from .status import ClientStatus, ServerStatus, _ClientCounters

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 3
PAIR_SEPARATOR = " ||| "  # bert-as-service's way of writing a sentence pair as one string
_PROGRESS_MIN_REQUESTS = 8  # an automatic progress bar only for jobs of at least this many requests
T = TypeVar("T")
# The call that serves each task, for the error that names it.
_TASK_CALLS = {
    contract.Task.EMBED.value: "encode(texts)",
    contract.Task.RERANK.value: "rerank(query, documents)",
    contract.Task.CLASSIFY.value: "classify(texts)",
    contract.Task.SPARSE.value: "encode_sparse(texts)",
}
LONG_INPUTS = ("truncate", "error", "chunk")  # what encode does with input longer than max_seq_len


class TruncationWarning(UserWarning):
    """Some inputs were longer than the model's max_seq_len and were cut (on the right, unless the call said
    truncation_direction="left")."""


@dataclass(frozen=True)
class Encoded:
    """Vectors, and what the tokenizer reported of each input (for usage accounting and truncation notices)."""

    vectors: Any  # as `encode` returns them
    token_counts: np.ndarray  # tokens before truncation; contract.NOT_COUNTED when longer than it could count
    truncated: np.ndarray  # bool per input: longer than max_seq_len and cut (not when encoded whole in windows)
    tokens_seen: int  # tokens the model ran over, [CLS]/[SEP] included (after truncation; every window's)
    tokens: Optional[list[list[str]]] = None  # with show_tokens: the tokens the model saw


@dataclass(frozen=True)
class _Options:
    """An encode call's per-request options, checked before any request."""

    columns: dict[str, bytes]  # optional tokenizer inputs, the same value for every item
    side: str  # the end an over-long item loses: "right" or "left"
    long_input: str  # one of LONG_INPUTS, truncate=False already folded in
    max_windows: int
    dtype: OutputDtype


@dataclass(frozen=True)
class _Encoding:
    """What the server answered for an encode call: the first pass, and the windows of the items encoded whole."""

    info: ModelInfo
    results: list[dict[str, np.ndarray]]
    windows: list[Window]
    window_vectors: Optional[np.ndarray]  # [len(windows), dim]


@dataclass(frozen=True)
class _Batch:
    """One request's worth of input, as tensors for the ensemble."""

    inputs: dict[str, np.ndarray]
    size: int


class Encoder:
    """Client for one model served by bertserve.

    `Encoder("localhost:8001").encode(["First do it", "then do it right"])`
    returns a float32 array `[2, dim]`; a model exported for another task
    answers `rerank`, `classify` or `encode_sparse` instead. The url's scheme picks the protocol
    (`grpc://`, `http://`); without one, `protocol` decides, gRPC by default.
    Large inputs are split into requests of at most the model's batch size and
    sent `concurrency` at a time; results keep input order. Every call is
    bounded by `timeout` seconds; refused connections are retried `retries`
    times with backoff inside that bound, and a server at capacity is retried
    with jittered backoff until that bound. So is a model the server holds but
    cannot run for a moment (being reloaded, or healing after its backend
    process died), unless `retries=0`, which fails at once with
    `ModelUnavailableError` (health checks want that). `api_key` (default
    $BERTSERVE_API_KEY) is sent to servers that require one; `admin_key`
    (default $BERTSERVE_ADMIN_KEY) only matters for admin APIs. One Encoder may
    be shared by many threads.
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        model: Optional[str] = None,
        protocol: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: Optional[int] = None,
        retries: int = DEFAULT_RETRIES,
        api_key: Optional[str] = None,
        admin_key: Optional[str] = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {concurrency!r}")
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size!r}")
        if retries < 0:
            raise InvalidInputError(f"retries must be 0 or more, got {retries!r}")
        self.address: Address = parse_address(url, protocol)
        self._keys = Keys(api_key or os.environ.get("BERTSERVE_API_KEY") or None,
                          admin_key or os.environ.get("BERTSERVE_ADMIN_KEY") or None)
        self.timeout = timeout
        self.concurrency = concurrency
        self.retries = retries
        self._model = model
        self._batch_size = batch_size
        self._info: Optional[ModelInfo] = None
        self._outputs: frozenset[str] = frozenset()  # the served model's outputs, by name
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._closed = False
        self._counters = _ClientCounters()

    # -- encoding -----------------------------------------------------------

    def encode(
        self,
        texts: Sequence[Any],
        *,
        is_tokenized: bool = False,
        show_tokens: bool = False,
        output: str = "ndarray",
        normalize: bool = False,
        truncate: bool = True,
        padded: bool = False,
        progress: Optional[bool] = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        truncation_direction: str = "right",
        long_input: str = "truncate",
        max_windows: int = contract.DEFAULT_MAX_WINDOWS,
        output_dtype: str = "float32",
    ) -> Any:
        """Encode `texts` and return their vectors, one per input, in input order.

        Items are sentences, `(first, second)` pairs or `"first ||| second"`
        strings; with `is_tokenized`, lists of tokens used as given (unknown
        ones become the unknown token). Returns `[n, dim]` float32, or for a
        token-level model a list of `[n_tokens, dim]` arrays (`padded=True`:
        one `[n, max_len, dim]` block and its `[n, max_len]` mask).
        `show_tokens=True` returns `(vectors, tokens)`: the tokens the model
        saw, [CLS]/[SEP] included. `output="list"` gives Python lists;
        `normalize=True` L2-normalises on the client.

        `prompt_name` picks one of the model's prompts (`info().prompts`) and
        `prompt` gives the text itself ("" for none); with neither, the model's
        default prompt applies. Input longer than the model's max_seq_len is
        cut on the `truncation_direction` side ("right" or "left") with a
        `TruncationWarning`; `long_input="error"` (or `truncate=False`) raises
        `InvalidInputError` instead, and `long_input="chunk"` encodes it whole:
        the token-weighted mean of the vectors of its windows of max_seq_len
        tokens, at most `max_windows` windows per call (pooled models only).
        `output_dtype` "int8", "uint8", "binary" or "ubinary" returns the
        vectors (after `normalize`) as sentence-transformers'
        `quantize_embeddings` computes them, int8 and uint8 over the ranges the
        export calibrated (`bertserve.quantize`).
        """
        if output not in ("ndarray", "list"):
            raise InvalidInputError(f"output must be 'ndarray' or 'list', got {output!r}")
        options = _options(prompt_name, prompt, truncation_direction, long_input, max_windows, output_dtype, truncate,
                           is_tokenized)
        encoding = self._encode("encode", texts, is_tokenized, show_tokens, padded, progress, options)
        if options.long_input != "chunk":  # chunked: every over-long item was encoded whole
            self._check_truncation(encoding.info, encoding.results, options.long_input == "truncate", options.side,
                                   call="encode")
        vectors = _assemble(encoding, padded, normalize, options.dtype)
        if output == "list":
            vectors = _to_list(vectors)
        if show_tokens:
            return vectors, _tokens(encoding.results)
        return vectors

    def encode_detailed(
        self, texts: Sequence[Any], *, is_tokenized: bool = False, show_tokens: bool = False, padded: bool = False,
        normalize: bool = False, prompt_name: Optional[str] = None, prompt: Optional[str] = None,
        truncation_direction: str = "right", long_input: str = "truncate",
        max_windows: int = contract.DEFAULT_MAX_WINDOWS, output_dtype: str = "float32",
    ) -> Encoded:
        """`encode`, returning with the vectors what the tokenizer reported: token counts, truncation, and
        (`show_tokens`) the tokens themselves.

        Input longer than max_seq_len is truncated and marked in `truncated`,
        without a warning: the caller decides what to tell its own users
        (`long_input="error"` raises, `"chunk"` encodes it whole). The options
        are `encode`'s.
        """
        options = _options(prompt_name, prompt, truncation_direction, long_input, max_windows, output_dtype, True,
                           is_tokenized)
        encoding = self._encode("encode_detailed", texts, is_tokenized, show_tokens, padded, None, options)
        if options.long_input == "error":
            self._check_truncation(encoding.info, encoding.results, False, options.side, call="encode")
        counts, seen, truncated = _accounting(encoding)
        return Encoded(
            vectors=_assemble(encoding, padded, normalize, options.dtype),
            token_counts=counts,
            truncated=truncated,
            tokens_seen=int(seen.sum()),
            tokens=_tokens(encoding.results) if show_tokens else None,
        )

    async def aencode(self, texts: Sequence[Any], **options: Any) -> Any:
        """`encode` for asyncio: the blocking calls run in a worker thread, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, partial(self.encode, texts, **options))

    def encode_stream(
        self,
        texts: Iterable[Any],
        *,
        max_in_flight: Optional[int] = None,
        progress: Optional[bool] = None,
        **options: Any,
    ) -> Iterator[Any]:
        """Encode an iterable of any length, yielding one vector per input in input order as results arrive.

        At most `max_in_flight` requests (default: `concurrency`) are outstanding,
        so memory stays flat however long the input is. `options` are `encode`'s.
        """
        if options.get("show_tokens") or options.get("padded"):
            raise InvalidInputError("encode_stream yields vectors only; use encode() for show_tokens or padded")
        size = self._request_size(self._serving(contract.Task.EMBED, "encode_stream"))
        in_flight = max_in_flight or self.concurrency
        if in_flight < 1:
            raise InvalidInputError(f"max_in_flight must be at least 1, got {in_flight!r}")
        source = iter(texts)
        pending: deque = deque()
        bar = _progress_bar(None, progress if progress is not None else sys.stderr.isatty())
        try:
            while True:
                while len(pending) < in_flight:
                    chunk = list(islice(source, size))
                    if not chunk:
                        break
                    pending.append(self._executor().submit(self.encode, chunk, progress=False, **options))
                if not pending:
                    return
                vectors = pending.popleft().result()
                bar.update(len(vectors))
                yield from vectors
        finally:
            for future in pending:
                future.cancel()
            bar.close()

    # -- the other tasks ----------------------------------------------------

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: Optional[int] = None,
        raw_scores: bool = False,
        truncate: bool = True,
    ) -> list[Ranked]:
        """Score each document's relevance to `query` with a cross-encoder (a rerank model), best first.

        Each (query, document) pair is cut to max_seq_len as sentence-transformers' CrossEncoder cuts it,
        longest segment first. Scores are the sigmoid of the model's logit, in [0, 1]; `raw_scores=True` gives
        the logits. `top_n` keeps the best n (ties: the earlier document first). Pairs longer than max_seq_len
        warn (`TruncationWarning`), or raise `InvalidInputError` when `truncate=False`.
        """
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral) or top_n < 1):
            raise InvalidInputError(f"top_n must be a whole number of at least 1 (or None for all), got {top_n!r}")
        _check_flags(raw_scores=raw_scores, truncate=truncate)
        pairs = _listed(documents, "rerank", "document", "rerank(query, [document])")
        query_bytes = _utf8(query, "the query")
        seconds = [_utf8(document, f"document {i}") for i, document in enumerate(pairs)]
        info = self._serving(contract.Task.RERANK, "rerank")
        output = contract.LOGITS if raw_scores else contract.SCORES
        results = self._task_results(info, [query_bytes] * len(seconds), seconds, [output])
        self._check_truncation(info, results, truncate)
        scores = np.concatenate([r[output] for r in results])[:, 0]
        _, seen, truncated = _token_counts(info, results)
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [Ranked(int(i), float(scores[i]), pairs[i], int(seen[i]), bool(truncated[i])) for i in order]

    def classify(self, texts: Sequence[Any], *, raw_scores: bool = False, truncate: bool = True) -> list[Classified]:
        """Classify each text with a fine-tuned classification head: every label with its score, best first.

        Items are strings, or `(first, second)` pairs for a model trained on pairs. Scores are the softmax over
        the model's labels; `raw_scores=True` gives the logits. Input longer than max_seq_len warns
        (`TruncationWarning`), or raises `InvalidInputError` when `truncate=False`.
        """
        _check_flags(raw_scores=raw_scores, truncate=truncate)
        items = _listed(texts, "classify", "string", "classify([text])")
        firsts, seconds = zip(*(_plain_item(i, item, pairs=True) for i, item in enumerate(items)))
        info = self._serving(contract.Task.CLASSIFY, "classify")
        output = contract.LOGITS if raw_scores else contract.SCORES
        results = self._task_results(info, list(firsts), list(seconds), [output])
        self._check_truncation(info, results, truncate)
        scores = np.concatenate([r[output] for r in results])
        if scores.shape[1] != len(info.labels):
            raise ServerError(f"model {info.name!r} sends {scores.shape[1]} scores but names {len(info.labels)} "
                              "labels; export it again with `bertserve export --overwrite`")
        _, seen, truncated = _token_counts(info, results)
        return [
            Classified([Label(info.labels[j], float(row[j])) for j in np.argsort(-row, kind="stable")],
                       int(seen[i]), bool(truncated[i]))
            for i, row in enumerate(scores)
        ]

    def encode_sparse(self, texts: Sequence[str], *, terms: bool = False, truncate: bool = True) -> list[SparseVector]:
        """SPLADE vectors of `texts` from a sparse model: per text, the vocabulary ids of its non-zero weights
        (ascending) and the weights.

        `terms=True` also returns each id's vocabulary token, for `SparseVector.as_dict()`. Input longer than
        max_seq_len warns (`TruncationWarning`), or raises `InvalidInputError` when `truncate=False`.
        """
        _check_flags(terms=terms, truncate=truncate)
        items = _listed(texts, "encode_sparse", "string", "encode_sparse([text])")
        firsts = [_plain_item(i, item, pairs=False)[0] for i, item in enumerate(items)]
        info = self._serving(contract.Task.SPARSE, "encode_sparse")
        if terms and contract.SPARSE_TERMS not in self._outputs:
            raise InvalidInputError(
                f"model {info.name!r} does not send the tokens of its weights (only sparse models on the Python "
                "backend do); call encode_sparse() without terms=True and look the indices up in its vocabulary"
            )
        outputs = [contract.SPARSE_INDICES, contract.SPARSE_VALUES] + ([contract.SPARSE_TERMS] if terms else [])
        results = self._task_results(info, firsts, [b""] * len(firsts), outputs, tokens=terms)
        self._check_truncation(info, results, truncate)
        _, seen, truncated = _token_counts(info, results)
        rows = (
            (indices, values, result[contract.SPARSE_TERMS][r] if terms else None)
            for result in results
            for r, (indices, values) in enumerate(zip(result[contract.SPARSE_INDICES], result[contract.SPARSE_VALUES]))
        )
        return [_sparse_vector(*row, int(seen[i]), bool(truncated[i])) for i, row in enumerate(rows)]

    # -- what is served -----------------------------------------------------

    def info(self) -> ModelInfo:
        """What the served model is: name, task (and labels), dimension, pooling, layers, normalisation, max
        length."""
        if self._info is None:
            name = self._model or self._single_model()
            try:
                config = self._retrying(lambda: self._transport().model_config(name), time.monotonic() + self.timeout,
                                        counted=False)
            except ModelNotFoundError:
                served = self.models()
                raise ModelNotFoundError(
                    f"{self.address} does not serve a ready model {name!r}; it serves {served}"
                ) from None
            self._outputs = frozenset(output["name"] for output in config.get("output", []))
            self._info = ModelInfo.from_parameters(name, config.get("parameters", {}))
        return self._info

    def models(self) -> list[str]:
        """Names of the bertserve models the server has ready, of every task (`info().task` says which)."""
        transport = self._transport()
        names = sorted({entry["name"] for entry in transport.statistics()})  # the loaded models
        return [n for n in names if transport.model_ready(n)
                and ModelInfo.is_bertserve_config(transport.model_config(n).get("parameters", {}))]

    def server_status(self) -> ServerStatus:
        """Server version, ready models and per-model request, inference, queue and compute figures.

        With the admin key, models the server holds but has not loaded (unloaded, or failed to load) are
        listed too, from the repository index.
        """
        transport = self._transport()
        stats = transport.statistics()
        ready = {entry["name"] for entry in stats if transport.model_ready(entry["name"])}
        unloaded = ([m["name"] for m in transport.model_index() if m["name"] not in ready]
                    if self._keys.admin_key else [])
        return ServerStatus.from_triton(transport.server_metadata(), stats, ready, unloaded)

    def status(self) -> ClientStatus:
        """This client's own counters: requests, sentences, failures, retries, time spent."""
        return self._counters.snapshot()

    # -- lifecycle ----------------------------------------------------------

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

    def _encode(
        self, call: str, texts: Sequence[Any], is_tokenized: bool, show_tokens: bool, padded: bool,
        progress: Optional[bool], options: _Options,
    ) -> _Encoding:
        items = _listed(texts, call, "sentence", f"{call}([text])")
        if show_tokens and options.long_input == "chunk":
            raise InvalidInputError("show_tokens shows one sequence per input, and long_input='chunk' encodes "
                                    "several windows of one; use one or the other")
        info = self._serving(contract.Task.EMBED, call)
        if padded and not info.token_level:
            raise InvalidInputError(f"padded=True is for token-level models; {info.name!r} pools to one vector per input")
        if options.long_input == "chunk" and info.token_level:
            raise InvalidInputError(f"long_input='chunk' averages the vectors of a long input's windows, and "
                                    f"{info.name!r} is a token-level model (a vector per token); use 'truncate' or "
                                    "'error' with it")
        if options.dtype.calibrated and not info.quantization_ranges:
            raise InvalidInputError(
                f"output_dtype {options.dtype.value!r} needs the ranges calibrated at export, and model {info.name!r} "
                "has none (token-level models have none, nor do models exported before they were recorded); ask for "
                "'binary' or 'ubinary', or export a pooled model again with `bertserve export --overwrite`")
        asks = show_tokens and info.format_version >= contract.RETURN_TOKENS_FORMAT  # older exports always send them
        item = _tokens_item if is_tokenized else _text_item
        firsts, seconds = zip(*(item(i, text) for i, text in enumerate(items)))
        size = self._request_size(info)
        batches = _batches(list(firsts), list(seconds), size, is_tokenized, asks, options.columns)
        outputs = [contract.EMBEDDING, contract.TOKEN_COUNT] + ([contract.TOKENS] if show_tokens else [])
        outputs += [contract.ATTENTION_MASK] if info.token_level else []
        results = self._run(info.name, batches, outputs, progress)
        if options.long_input != "chunk":
            return _Encoding(info, results, [], None)
        counts, _, truncated = _token_counts(info, results)
        if not truncated.any():
            return _Encoding(info, results, [], None)
        pairs = [i for i in np.flatnonzero(truncated) if seconds[i]]
        if pairs:
            raise InvalidInputError(f"item {pairs[0]} is a pair of sentences longer than max_seq_len, and "
                                    "long_input='chunk' encodes single texts in windows; send it as one text, or "
                                    "use long_input='truncate'")
        windows = plan_windows(counts.tolist(), info.max_seq_len, options.max_windows)
        # Each window is its item's text again, with the same prompt, cut by the tokenizer to the window's tokens.
        starts = {contract.WINDOW: np.array([w.start for w in windows], np.int64)}
        window_batches = _batches([firsts[w.item] for w in windows], [b""] * len(windows), size, False, False,
                                  options.columns, starts)
        window_results = self._run(info.name, window_batches, [contract.EMBEDDING, contract.TOKEN_COUNT], False)
        window_vectors = np.concatenate([r[contract.EMBEDDING] for r in window_results]).astype(np.float32, copy=False)
        return _Encoding(info, results, windows, window_vectors)

    def _serving(self, task: contract.Task, call: str) -> ModelInfo:
        """The served model's info, refusing (before any request) a call made for another task than the model's."""
        info = self.info()
        if info.task != task.value:
            use = _TASK_CALLS.get(info.task, "it from a newer bertserve SDK")
            raise InvalidInputError(
                f"model {info.name!r} is a {info.task} model and {call}() is for {task.value} models: call {use} "
                f"with it, or name a {task.value} model with Encoder(url, model=...)"
            )
        return info

    def _task_results(
        self, info: ModelInfo, firsts: list[bytes], seconds: list[bytes], outputs: list[str], tokens: bool = False
    ) -> list[dict[str, np.ndarray]]:
        """`outputs` (and each item's token count) for items already checked, in requests of the batch size;
        `tokens` asks for token strings (contract.RETURN_TOKENS), which the server builds only when asked."""
        batches = _batches(firsts, seconds, self._request_size(info), False, tokens)
        return self._run(info.name, batches, outputs + [contract.TOKEN_COUNT], None)

    def _request_size(self, info: ModelInfo) -> int:
        return min(self._batch_size or info.max_batch_size, info.max_batch_size)

    def _run(
        self, model: str, batches: list[_Batch], outputs: list[str], progress: Optional[bool]
    ) -> list[dict[str, np.ndarray]]:
        call = partial(self._infer, model, outputs=outputs)
        if len(batches) == 1 or getattr(self._local, "worker", False):
            # A worker of the pool (encode_stream's requests) waiting on the pool could wait forever: run in turn.
            return [call(batch) for batch in batches]
        show = progress if progress is not None else (sys.stderr.isatty() and len(batches) >= _PROGRESS_MIN_REQUESTS)
        bar = _progress_bar(sum(b.size for b in batches), show)
        results = []
        try:
            for batch, result in zip(batches, self._executor().map(call, batches)):
                results.append(result)
                bar.update(batch.size)
        finally:
            bar.close()
        return results

    def _infer(self, model: str, batch: _Batch, outputs: list[str]) -> dict[str, np.ndarray]:
        started = time.monotonic()
        result = self._retrying(lambda: self._transport().infer(model, batch.inputs, outputs), started + self.timeout)
        got = len(result[outputs[0]])  # the task's first output: never hand back fewer results than inputs
        if got != batch.size:
            raise ServerError(f"{self.address} returned {got} rows of {outputs[0]} for {batch.size} inputs")
        self._counters.add(requests=1, sentences=batch.size, seconds=time.monotonic() - started)
        return result

    def _retrying(self, call: Callable[[], T], deadline: float, counted: bool = True) -> T:
        """`call()`, retried with backoff before `deadline` while its failure is one that passes; `counted` in
        `status()` (requests are, model lookups are not)."""
        count = self._counters.add if counted else lambda **_: None
        attempt = waited = 0
        while True:
            try:
                return call()
            except (ServerBusyError, ModelUnavailableError) as exc:
                # At capacity, or the model is being reloaded: back off with jitter (clients turned away together
                # must not return together), for as long as the timeout allows. A reload takes seconds, so a
                # client waits at most half a second past its end. `retries=0` does not wait for a model that
                # cannot run: a health check must see a dead backend at once.
                ceiling = 2.0 if isinstance(exc, ServerBusyError) else 0.5
                backoff = random.uniform(0.5, 1.0) * min(ceiling, 0.05 * 2**waited)
                given_up = isinstance(exc, ModelUnavailableError) and not self.retries
                if given_up or time.monotonic() + backoff >= deadline:
                    count(failures=1)
                    raise
                waited += 1
            except ServerUnavailableError:
                backoff = 0.1 * 2**attempt
                if attempt >= self.retries or time.monotonic() + backoff >= deadline:
                    count(failures=1)
                    raise
                attempt += 1
            except Exception:
                count(failures=1)
                raise
            count(retries=1)
            time.sleep(backoff)

    def _check_truncation(self, info: ModelInfo, results: list[dict[str, np.ndarray]], truncate: bool,
                          side: str = "right", call: str = "") -> None:
        """Warn of the items that were cut (on `side`), or refuse them when not `truncate`; `call` "encode" names
        its long_input choices too."""
        counts, _, truncated = _token_counts(info, results)
        long = np.flatnonzero(truncated)
        if not len(long):
            return
        first = int(long[0])
        count = int(counts[first])
        tokens = f"more than {info.max_seq_len}" if count == contract.NOT_COUNTED else str(count)
        message = (
            f"{len(long)} input(s) longer than the model's max_seq_len of {info.max_seq_len} tokens "
            f"(first: item {first}, {tokens} tokens)"
        )
        if not truncate:
            if call == "encode":
                raise InvalidInputError(f"{message}; shorten them, pass truncate=True (long_input='truncate') to cut "
                                        f"them on the {side}, or long_input='chunk' to encode them whole in windows")
            raise InvalidInputError(f"{message}; shorten them, or pass truncate=True to cut them on the {side}")
        warnings.warn(f"{message} were truncated on the {side}; pass truncate=False to refuse them instead",
                      TruncationWarning, stacklevel=3)

    def _single_model(self) -> str:
        names = self.models()
        if len(names) == 1:
            return names[0]
        if not names:
            raise ModelNotFoundError(f"{self.address} serves no ready bertserve model; export one with `bertserve export`")
        raise ModelNotFoundError(f"{self.address} serves several models {names}; pick one with Encoder(url, model=...)")

    def _transport(self) -> Transport:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            with self._lock:
                if self._closed:
                    raise InvalidInputError("this Encoder is closed; create a new one")
                transport = open_transport(self.address, self.timeout, self._keys)
                self._transports.append(transport)
            self._local.transport = transport
        return transport

    def _mark_worker(self) -> None:
        self._local.worker = True

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise InvalidInputError("this Encoder is closed; create a new one")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="bertserve",
                                                initializer=self._mark_worker)
            return self._pool


def _listed(items: Any, call: str, noun: str, example: str) -> Sequence[Any]:
    """`items` if it is a non-empty list (or tuple, or array) of inputs; else an error saying how to call `call`."""
    if isinstance(items, (str, bytes)):
        raise InvalidInputError(f"{call}() takes a list of {noun}s; wrap a single {noun} in a list: {example}")
    if not isinstance(items, (Sequence, np.ndarray)):
        raise InvalidInputError(f"{call}() takes a list of {noun}s, got {type(items).__name__}")
    if len(items) == 0:
        raise InvalidInputError(f"{call}() got an empty list of {noun}s; pass at least one {noun}")
    return items


def _check_flags(**flags: Any) -> None:
    """Refuse a flag that is not a bool: `raw_scores="false"` would otherwise read as true."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidInputError(f"{name} must be True or False, got {value!r}")


def _options(prompt_name: Optional[str], prompt: Optional[str], truncation_direction: str, long_input: str,
             max_windows: int, output_dtype: str, truncate: bool, is_tokenized: bool) -> _Options:
    """An encode call's options, checked (each bad value named) before any request is sent."""
    _check_flags(truncate=truncate, is_tokenized=is_tokenized)
    if prompt_name is not None and prompt is not None:
        raise InvalidInputError(f"prompt_name={prompt_name!r} and prompt={prompt!r} both given; name one of the "
                                "model's prompts or give the prompt text, not both")
    columns = {}
    for name, value in ((contract.PROMPT_NAME, prompt_name), (contract.PROMPT, prompt)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a string (or None), got {type(value).__name__}")
        if is_tokenized:
            raise InvalidInputError(f"{name} is for text: with is_tokenized=True the tokens are used as given, "
                                    f"without a prompt; drop {name}, or send text")
        if len(value) > contract.MAX_PROMPT_CHARS:
            raise InvalidInputError(contract.prompt_too_long(name, len(value)))
        try:
            columns[name] = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"{name} cannot be encoded as UTF-8 ({exc.reason}); remove lone surrogates"
                                    ) from None
    if truncation_direction not in contract.TRUNCATION_DIRECTIONS:
        raise InvalidInputError(f"truncation_direction {truncation_direction!r} is not one of "
                                + ", ".join(map(repr, contract.TRUNCATION_DIRECTIONS)))
    if truncation_direction == "left":  # "right" is the server's default: nothing to send
        columns[contract.TRUNCATION_DIRECTION] = b"left"
    if long_input not in LONG_INPUTS:
        raise InvalidInputError(f"long_input {long_input!r} is not one of {', '.join(map(repr, LONG_INPUTS))}")
    if not truncate:
        if long_input == "chunk":
            raise InvalidInputError("truncate=False refuses over-long input and long_input='chunk' encodes it whole; "
                                    "pass one of them (long_input='error' is truncate=False)")
        long_input = "error"
    if long_input == "chunk" and is_tokenized:
        raise InvalidInputError("long_input='chunk' splits text into windows, and is_tokenized items are used as "
                                "given; send text, or use long_input='truncate' or 'error'")
    if isinstance(max_windows, bool) or not isinstance(max_windows, numbers.Integral) or max_windows < 1:
        raise InvalidInputError(f"max_windows must be a whole number of at least 1, got {max_windows!r}")
    return _Options(columns, truncation_direction, long_input, int(max_windows), _output_dtype(output_dtype))


def _batches(firsts: list[bytes], seconds: list[bytes], size: int, is_tokenized: bool, show_tokens: bool,
             columns: Optional[dict[str, bytes]] = None, per_item: Optional[dict[str, np.ndarray]] = None
             ) -> list[_Batch]:
    """Checked items (first segments, and second segments, b"" for none) cut into request tensors; with
    `show_tokens`, each request asks for the tokens (the server builds them only when asked). `columns` are optional
    string inputs sent with the same value for every item, `per_item` optional inputs of one value per item."""
    has_pairs = any(seconds)
    batches = []
    for start in range(0, len(firsts), size):
        chunk = slice(start, start + size)
        n = len(firsts[chunk])
        inputs = {contract.TEXT: np.array(firsts[chunk], dtype=np.object_).reshape(n, 1)}
        if has_pairs:
            inputs[contract.TEXT_PAIR] = np.array(seconds[chunk], dtype=np.object_).reshape(n, 1)
        if is_tokenized:
            inputs[contract.IS_TOKENIZED] = np.ones((n, 1), dtype=np.bool_)
        if show_tokens:
            inputs[contract.RETURN_TOKENS] = np.ones((n, 1), dtype=np.bool_)
        for name, value in (columns or {}).items():
            inputs[name] = np.full((n, 1), value, dtype=np.object_)
        for name, values in (per_item or {}).items():
            inputs[name] = values[chunk].reshape(n, 1)
        batches.append(_Batch(inputs, n))
    return batches


def _utf8(text: Any, what: str) -> bytes:
    """`text` as UTF-8, refusing what no model can read; `what` names it in the error ("item 3", "the query")."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} is {type(text).__name__}, not str; give every input as a string")
    if not text.strip():
        raise InvalidInputError(f"{what} is an empty string; remove it or give it text")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} cannot be encoded as UTF-8 ({exc.reason}); remove lone surrogates") from None


def _text_item(i: int, item: Any) -> tuple[bytes, bytes]:
    """A sentence, a (first, second) pair, or bert-as-service's "first ||| second" (split at the last separator)."""
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise InvalidInputError(f"item {i} is a {type(item).__name__} of {len(item)}; a pair has exactly 2 sentences")
        return _utf8(item[0], f"item {i}"), _utf8(item[1], f"second sentence of item {i}")
    if isinstance(item, str) and PAIR_SEPARATOR in item:
        first, second = item.rsplit(PAIR_SEPARATOR, 1)
        return _utf8(first, f"first sentence of item {i}"), _utf8(second, f"second sentence of item {i}")
    return _utf8(item, f"item {i}"), b""


def _plain_item(i: int, item: Any, pairs: bool) -> tuple[bytes, bytes]:
    """A text taken whole (no " ||| " convention: that is bert-as-service's, for encode), or with `pairs` a
    (first, second) tuple."""
    if pairs and isinstance(item, (tuple, list)):
        return _text_item(i, item)
    return _utf8(item, f"item {i}"), b""


def _tokens_item(i: int, item: Any) -> tuple[bytes, bytes]:
    if isinstance(item, str) or not isinstance(item, (list, tuple)):
        raise InvalidInputError(
            f"item {i} is {type(item).__name__}; with is_tokenized=True every item is a list of token strings"
        )
    if not item or not all(isinstance(t, str) and t for t in item):
        raise InvalidInputError(f"item {i} must be a non-empty list of non-empty token strings")
    return json.dumps(list(item)).encode("utf-8"), b""


def _assemble(encoding: _Encoding, padded: bool, normalize: bool, dtype: OutputDtype) -> Any:
    """The vectors of an encode call as it returns them: windowed items' vectors combined, then normalised (when
    asked), then quantized (`dtype`)."""
    info, results = encoding.info, encoding.results
    if not info.token_level:
        vectors = np.concatenate([r[contract.EMBEDDING] for r in results]).astype(np.float32, copy=False)
        if encoding.windows:
            vectors = combine(vectors, encoding.windows, encoding.window_vectors, info.normalize)
        return _quantized(_l2(vectors) if normalize else vectors, dtype, info)
    rows = [
        (vectors, mask)
        for result in results
        for vectors, mask in zip(result[contract.EMBEDDING], result[contract.ATTENTION_MASK])
    ]
    if not padded:
        return [_quantized(_l2(v[: int(m.sum())]) if normalize else v[: int(m.sum())], dtype, info) for v, m in rows]
    width = max(len(m) for _, m in rows)
    block = np.zeros((len(rows), width, info.dim), np.float32)
    mask = np.zeros((len(rows), width), np.int64)
    for i, (v, m) in enumerate(rows):
        block[i, : len(m)] = _l2(v) if normalize else v
        mask[i, : len(m)] = m
    return _quantized(block, dtype, info), mask


def _quantized(vectors: np.ndarray, dtype: OutputDtype, info: ModelInfo) -> np.ndarray:
    """`vectors` as `dtype` (each along its last axis: a token-level model's token vectors one by one)."""
    if dtype is OutputDtype.FLOAT32:
        return vectors
    return quantize(vectors, dtype, info.quantization_ranges or None)


def _accounting(encoding: _Encoding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_token_counts` of an encode call, where the items encoded in windows were seen whole: every window's tokens
    and its [CLS] and [SEP], and none was truncated."""
    counts, seen, truncated = _token_counts(encoding.info, encoding.results)
    for window in encoding.windows:
        if truncated[window.item]:  # its first window: forget the truncated pass
            truncated[window.item] = False
            seen[window.item] = 0
        seen[window.item] += window.tokens + 2
    return counts, seen, truncated


def _token_counts(info: ModelInfo, results: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: its token count as the tokenizer reported it, the tokens the model saw (after truncation), and
    whether it was truncated."""
    counts = np.concatenate([r[contract.TOKEN_COUNT].reshape(-1) for r in results])
    truncated = (counts > info.max_seq_len) | (counts == contract.NOT_COUNTED)
    return counts, np.where(truncated, info.max_seq_len, counts), truncated


def _sparse_vector(indices: np.ndarray, values: np.ndarray, terms: Optional[np.ndarray], token_count: int,
                   truncated: bool) -> SparseVector:
    """One row of the server's sparse output (largest weight first, padded with weight 0) as ascending ids."""
    kept = values != 0
    order = np.argsort(indices[kept], kind="stable")
    return SparseVector(
        indices=indices[kept][order].astype(np.int64, copy=False),
        values=values[kept][order].astype(np.float32, copy=False),
        token_count=token_count,
        truncated=truncated,
        terms=None if terms is None else [t.decode("utf-8") for t in terms[kept][order]],
    )


def _tokens(results: list[dict[str, np.ndarray]]) -> list[list[str]]:
    return [[t.decode("utf-8") for t in row if t] for result in results for row in result[contract.TOKENS]]


def _l2(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _to_list(vectors: Any) -> Any:
    if isinstance(vectors, tuple):
        return tuple(_to_list(v) for v in vectors)
    if isinstance(vectors, list):
        return [v.tolist() for v in vectors]
    return vectors.tolist()


def _progress_bar(total: Optional[int], show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sent", disable=not show, desc="encoding", file=sys.stderr)
