"""How the OpenAI door gathers small requests into shared Triton calls, in process, with a fake SDK `Encoder`.

Pure and fast: the fake stands for our own SDK's `encode_detailed`, so that a call can be held in flight, or held
past its bound, at will. The real server's side (vectors, usage, Triton's own counts) is in test_openai.py.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest

from bertserve.client import Encoded
from bertserve.errors import RequestTimeoutError
from bertserve.frontdoor import FrontDoorConfig
from bertserve.frontdoor.models import PLAIN, EncodeOptions, Models, _Coalescer
from bertserve.info import ModelInfo

INFO = ModelInfo(name="fake", source="fake", dim=2, pooling="mean", layers=(-1,), normalize=True, max_seq_len=16,
                 max_batch_size=8)


class _HeldEncoder:
    """`encode_detailed` that records each call's texts and waits for `release` before answering: vector i of a
    text is (its length, i), its token count its length."""

    concurrency = 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()

    def encode_detailed(self, texts: list[str]) -> Encoded:
        self.calls.append(list(texts))
        self.release.wait(10)
        counts = np.array([len(t) for t in texts])
        return Encoded(vectors=np.array([[len(t), i] for i, t in enumerate(texts)], np.float32),
                       token_counts=counts, truncated=counts > INFO.max_seq_len,
                       tokens_seen=int(np.minimum(counts, INFO.max_seq_len).sum()))


async def _in_flight(encoder: _HeldEncoder, calls: int) -> None:
    """Wait (10 s at most) until `calls` calls have reached the encoder."""
    for _ in range(1000):
        if len(encoder.calls) >= calls:
            return
        await asyncio.sleep(0.01)


def _run(encoder: _HeldEncoder, timeout: float, body: Callable[[_Coalescer], Any]) -> Any:
    """`body(coalescer)` on an event loop, the encoder's calls in worker threads as `Models.call` runs them."""
    pool = ThreadPoolExecutor(8)

    async def call(function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    async def main() -> Any:
        return await body(_Coalescer(encoder, INFO, call, timeout))

    try:
        return asyncio.run(main())
    finally:
        encoder.release.set()
        pool.shutdown(wait=True)


def test_requests_that_arrive_while_calls_are_in_flight_share_one_call_and_get_their_own_slices():
    encoder = _HeldEncoder()
    requests = [["a"], ["bb"], ["ccc", "dddd"], ["e" * 20, "ff"], ["g"], ["h" * 5] * 5]

    async def body(coalescer: _Coalescer) -> list[Encoded]:
        answers = [asyncio.ensure_future(coalescer.encode(texts)) for texts in requests]
        await _in_flight(encoder, 2)  # the first two are sent at once; the others wait for a call to end
        encoder.release.set()
        return await asyncio.gather(*answers)

    answers = _run(encoder, 30.0, body)
    # Two calls at once, then the queue's head up to max_batch_size (8) items, in arrival order.
    assert encoder.calls == [["a"], ["bb"], ["ccc", "dddd", "e" * 20, "ff", "g"], ["h" * 5] * 5]
    for texts, answer in zip(requests, answers):
        assert answer.vectors[:, 0].tolist() == [len(t) for t in texts]
        assert answer.token_counts.tolist() == [len(t) for t in texts]
        assert answer.truncated.tolist() == [len(t) > 16 for t in texts]
        assert answer.tokens_seen == sum(min(len(t), 16) for t in texts)


def test_a_call_that_never_ends_is_a_timeout_for_every_request_waiting_on_it():
    """The SDK bounds its own calls; should one hang regardless, its requests get a 503's error, not a hang."""
    encoder = _HeldEncoder()

    async def body(coalescer: _Coalescer) -> list[Any]:
        return await asyncio.gather(*(coalescer.encode([text]) for text in "abc"), return_exceptions=True)

    answers = _run(encoder, 0.05, body)
    assert [type(answer) for answer in answers] == [RequestTimeoutError] * 3
    assert encoder.calls == [["a"], ["b"], ["c"]]  # a call past its bound gives its place to the next


def test_a_request_whose_client_gave_up_in_the_queue_is_never_sent():
    encoder = _HeldEncoder()

    async def body(coalescer: _Coalescer) -> Encoded:
        held = [asyncio.ensure_future(coalescer.encode([text])) for text in "ab"]
        gone = asyncio.ensure_future(coalescer.encode(["gone"]))
        kept = asyncio.ensure_future(coalescer.encode(["kept"]))
        await _in_flight(encoder, 2)
        gone.cancel()  # as Starlette cancels the handler of a client that disconnected
        encoder.release.set()
        await asyncio.gather(*held)
        return await kept

    answer = _run(encoder, 30.0, body)
    assert encoder.calls == [["a"], ["b"], ["kept"]] and answer.vectors[:, 0].tolist() == [4]


@pytest.mark.parametrize("size", [9, 20])
def test_a_request_over_max_batch_size_is_sent_alone(size):
    encoder = _HeldEncoder()
    encoder.release.set()
    texts = [f"t{i}" for i in range(size)]
    answer = _run(encoder, 30.0, lambda coalescer: coalescer.encode(texts))
    assert encoder.calls == [texts] and answer.vectors.shape == (size, 2)


class _OptionsEncoder(_HeldEncoder):
    """`_HeldEncoder` that records each call's options too; vector i of a text is (its length, 1 if the call cut
    on the left else 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[dict[str, Any]] = []

    def encode_detailed(self, texts: list[str], **options: Any) -> Encoded:
        self.options.append(options)
        encoded = super().encode_detailed(texts)
        encoded.vectors[:, 1] = options.get("truncation_direction") == "left"
        return encoded

    def close(self) -> None:
        pass


def test_only_requests_with_the_same_options_share_a_call():
    """`Models.encode` with the encoder of a served model in place: requests share calls per options; a `prompt`
    text (any text: no bound on the queues it would make) and long_input "chunk" (windows bounded per request) go
    alone."""
    encoder = _OptionsEncoder()
    models = Models(FrontDoorConfig(openai_port=1, max_windows=5))
    models._infos[INFO.name], models._encoders[INFO.name] = INFO, encoder  # as `info()` and `encoder()` keep them
    left = EncodeOptions(truncation_direction="left")
    requests = [("a", PLAIN), ("b", PLAIN), ("c", PLAIN), ("d", left), ("e", PLAIN), ("f", left), ("g", left),
                ("h", EncodeOptions(prompt="query: ")), ("i", EncodeOptions(long_input="chunk"))]

    async def main() -> list[Encoded]:
        answers = [asyncio.ensure_future(models.encode(INFO.name, [text], options)) for text, options in requests]
        await _in_flight(encoder, 6)  # a, b; d, f: each options' first two at once; h and i alone
        encoder.release.set()
        return await asyncio.gather(*answers)

    try:
        answers = asyncio.run(main())
    finally:
        encoder.release.set()
        models.close()
    calls = sorted(zip(encoder.calls, encoder.options))
    assert calls == [(["a"], {}), (["b"], {}), (["c", "e"], {}), (["d"], {"truncation_direction": "left"}),
                     (["f"], {"truncation_direction": "left"}), (["g"], {"truncation_direction": "left"}),
                     (["h"], {"prompt": "query: "}), (["i"], {"long_input": "chunk", "max_windows": 5})]
    for (text, options), answer in zip(requests, answers):
        assert answer.vectors.tolist() == [[1, options.truncation_direction == "left"]], text
