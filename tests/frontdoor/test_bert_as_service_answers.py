"""bert-as-service's door in process, with fake `Models`: what `_answer` tells the unchanged `BertClient` when encoding
fails, the failure counter, and answers that wait for a subscriber without holding up other clients.

Pure: real ZeroMQ sockets on loopback and the real client, no Triton and no front-door process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest
import zmq
from bert_serving.client import BertClient

from bertserve.client import Encoded
from bertserve.errors import (
    AuthenticationError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
    ServerUnavailableError,
)
from bertserve.frontdoor import FrontDoorConfig, bert_as_service
from bertserve.frontdoor.bert_as_service import BertAsServiceServer
from bertserve.frontdoor.models import BUSY, FAILED, KEY_REFUSED, UNAVAILABLE
from bertserve.info import ModelInfo

from ..conftest import settled
from .conftest import free_pair

INTERNAL = "grpc://10.9.8.7:18101"  # the address SDK errors name: none of it may reach a client
INFO = ModelInfo(name="fake-model", source="fake", dim=4, pooling="mean", layers=(-1,), normalize=True,
                 max_seq_len=16, max_batch_size=8)
HANG_GUARD_MS = 20_000  # the client's timeout: only a hang reaches it
FAILURES = {
    "unforeseen": (RuntimeError("/secret/path"), FAILED),
    "busy": (ServerBusyError(f"{INTERNAL} is at capacity"), BUSY),
    "unavailable": (ServerUnavailableError(f"could not reach a Triton server at {INTERNAL}"), UNAVAILABLE),
    "timeout": (RequestTimeoutError(f"{INTERNAL} did not answer within the timeout"), UNAVAILABLE),
    "key refused": (AuthenticationError(f"{INTERNAL} requires an API key"), KEY_REFUSED),
    "server error": (ServerError(f"{INTERNAL} refused the request: boom", detail="refused the request: boom"), FAILED),
    # A comma would make NumPy raise ValueError instead of the TypeError the client's users know.
    "input refused": (InvalidInputError(f"{INTERNAL} refused the input: item 0, no token",
                                        detail="refused the input: item 0, no token"),
                      "refused the input: item 0; no token"),
}


class _FakeEncoder:
    """The SDK `Encoder` as the door uses it, of a model described by `info`; a sentence named in FAILURES raises
    that failure."""

    def __init__(self, info: ModelInfo = INFO) -> None:
        self._info = info

    def info(self) -> ModelInfo:
        return self._info

    def encode_detailed(self, texts: list[Any], **options: Any) -> Encoded:
        if texts[0] in FAILURES:
            raise FAILURES[texts[0]][0]
        n = len(texts)
        return Encoded(vectors=np.full((n, INFO.dim), 0.5, np.float32), token_counts=np.full(n, 3),
                       truncated=np.zeros(n, bool), tokens_seen=3 * n, tokens=[["[CLS]", "x", "[SEP]"]] * n)


class _FakeModels:
    """`frontdoor.models.Models` without Triton; `choice` is what picking the door's model raises, if anything;
    `info` describes the model it picks."""

    def __init__(self, choice: Optional[Exception] = None, info: ModelInfo = INFO) -> None:
        self._choice, self._info = choice, info

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    def encoder(self, name: Optional[str] = None) -> _FakeEncoder:
        if self._choice is not None:
            raise self._choice
        return _FakeEncoder(self._info)


@contextlib.contextmanager
def _serving(models: _FakeModels) -> Iterator[BertAsServiceServer]:
    """The door's ZeroMQ server on its own event loop in a thread, on two free ports."""
    config = FrontDoorConfig(host="127.0.0.1", openai_port=0, bert_as_service_port=free_pair())
    ready, running = threading.Event(), {}

    async def main() -> None:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        running["server"] = BertAsServiceServer(config, models)
        ready.set()
        await running["server"].run()

    def serve() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield running["server"]
    finally:
        running["loop"].call_soon_threadsafe(running["task"].cancel)
        thread.join(10)
        assert not thread.is_alive()


def _client(server: BertAsServiceServer) -> BertClient:
    port, port_out = server.config.bert_as_service_ports
    return BertClient(ip="127.0.0.1", port=port, port_out=port_out, timeout=HANG_GUARD_MS)


@pytest.fixture(scope="module")
def door() -> Iterator[BertAsServiceServer]:
    with _serving(_FakeModels()) as server:
        yield server


def test_the_fakes_encode(door):
    with _client(door) as bc:
        assert bc.server_config["model"] == "fake-model"
        assert bc.encode(["hello"]).tolist() == [[0.5] * 4]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_tells_the_client_no_internals_and_is_counted(door, failure):
    with _client(door) as bc:
        before = bc.server_status
        with pytest.raises(TypeError) as raised:
            bc.encode([failure])
        after = bc.server_status
    assert f"data type 'bertserve: {FAILURES[failure][1]}' not understood" in str(raised.value)
    assert not any(internal in str(raised.value) for internal in ("10.9.8.7", "18101", "grpc://", "/secret"))
    assert [after[k] - before[k] for k in ("num_failed_request", "num_request", "num_sentence")] == [1, 0, 0]


@pytest.mark.filterwarnings("ignore:server does not put a restriction on \"max_seq_len\"")
def test_a_door_that_cannot_pick_its_model_still_connects_and_says_why():
    """The client reads the config on connecting: an error there would be a KeyError, without the reason."""
    choice = ModelNotFoundError("several models are served (['a', 'b']); start the front door with a model name")
    with _serving(_FakeModels(choice)) as server, _client(server) as bc:
        assert (bc.server_config["model"], bc.server_config["error"]) == (None, str(choice))
        with pytest.raises(TypeError, match=r"bertserve: several models are served \(\['a'; 'b'\]\)"):
            bc.encode(["hello"])


@pytest.mark.filterwarnings("ignore:server does not put a restriction on \"max_seq_len\"")
def test_a_door_on_a_model_of_another_task_connects_and_refuses_to_encode_with_it():
    """A rerank model has no vectors to send: the client connects, and each encode says which models the door takes."""
    with _serving(_FakeModels(info=replace(INFO, task="rerank", dim=1, labels=("score",)))) as server, \
            _client(server) as bc:
        assert bc.server_config["model"] is None and "is a rerank model" in bc.server_config["error"]
        with pytest.raises(TypeError, match=r"bertserve: the model 'fake-model' is a rerank model; bert-as-service's "
                                            r"protocol serves embedding models: start the door with "
                                            r"--bert-as-service-model naming one"):
            bc.encode(["hello"])
        assert server._counts["num_request"] == 0


def test_a_client_that_never_subscribes_does_not_hold_up_others(door, monkeypatch):
    """Its answer waits for a subscription far longer than the other client's timeout, which is answered anyway."""
    monkeypatch.setattr(bert_as_service, "_SUBSCRIBE_WAIT", 10 * HANG_GUARD_MS / 1000)
    context = zmq.Context()
    ghost = context.socket(zmq.PUSH)
    ghost.setsockopt(zmq.LINGER, 0)
    ghost.connect(f"tcp://127.0.0.1:{door.config.bert_as_service_ports[0]}")
    encoded = door._counts["num_request"]
    try:
        ghost.send_multipart([b"ghost", b'["never fetched"]', b"1", b"1"])
        # Encoded: its answer now waits for the subscription (nothing else runs on the loop before that wait).
        assert settled(lambda: door._counts["num_request"], lambda count: count > encoded) == encoded + 1
        with _client(door) as bc:
            assert bc.encode(["served meanwhile"]).shape == (1, INFO.dim)
            assert bc.server_status["num_request"] == encoded + 2
        assert b"ghost" in door._clients and b"ghost" not in door._subscribed
    finally:
        ghost.close()
        context.term()
