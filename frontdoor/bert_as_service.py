"""bert-as-service's ZeroMQ protocol, as `bert-serving-client==1.10.0` speaks it, so `BertClient` code runs unchanged.

The client PUSHes `[identity, body, request_id, count]` to the request port and SUBscribes to its identity on the
result port. A body is `SHOW_CONFIG`, `SHOW_STATUS`, or a JSON list of sentences (or of token lists, which is
how the client sends `is_tokenized`). Answers are published as `[identity, json, request_id]` for config and
status, and `[identity, json({"dtype", "shape", "tokens"}), array bytes, request_id]` for vectors. Several
clients with one identity all receive its answers, as before.

The client has no error frame. An error is sent as a vector answer whose `dtype` is the error message, so the
unchanged client raises `TypeError: data type 'bertserve: <message>' not understood`: the request fails loudly
and says why, instead of hanging until the client's timeout.

The protocol (`BertClient.encode(texts, is_tokenized, show_tokens)`) carries none of bertserve's per-request options
(prompts, truncation side, long inputs, compact vectors): its requests get the SDK's defaults, the model's default
prompt included, as the server applies it to every request that names none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from bertserve import __version__
from bertserve.contract import Task
from bertserve.errors import BertserveError, InvalidInputError
from bertserve.info import ModelInfo

from .config import BERT_AS_SERVICE_VERSION, FrontDoorConfig
from .models import Models, client_message

_log = logging.getLogger("bertserve.frontdoor")
_SUBSCRIBE_WAIT = 5.0  # seconds an answer waits for its client's subscription to reach the result socket
# bert-as-service's names for bertserve's pooling strategies.
_POOLING = {"mean": "REDUCE_MEAN", "max": "REDUCE_MAX", "mean_max": "REDUCE_MEAN_MAX", "cls": "CLS_TOKEN",
            "sep": "SEP_TOKEN", "cls_pooled": "CLS_POOLED", "none": "NONE"}


class BertAsServiceServer:
    """Requests on `port` (PULL), results on `port + 1` (XPUB, so that answers wait for their subscriber)."""

    def __init__(self, config: FrontDoorConfig, models: Models) -> None:
        self.config, self.models = config, models
        self._context = zmq.asyncio.Context()
        self._subscribed: dict[bytes, int] = {}
        self._new_subscriber = asyncio.Event()
        self._started = time.time()
        self._counts = {"num_request": 0, "num_sentence": 0, "num_failed_request": 0}
        self._clients: set[bytes] = set()

    async def run(self) -> None:
        receiver = self._context.socket(zmq.PULL)
        # A frame over the limit is never buffered: ZeroMQ drops the sender's connection instead. The limit is
        # per frame: ZeroMQ holds all frames of a message before handing it over, so a message of many frames
        # is bounded only by memory (README: Security and limits).
        receiver.setsockopt(zmq.MAXMSGSIZE, self.config.max_request_bytes)
        self._sender = self._context.socket(zmq.XPUB)
        self._sender.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, also repeats of one identity
        for socket in (receiver, self._sender):
            socket.setsockopt(zmq.LINGER, 0)
        port_in, port_out = self.config.bert_as_service_ports
        receiver.bind(f"tcp://{self.config.host}:{port_in}")
        self._sender.bind(f"tcp://{self.config.host}:{port_out}")
        _log.warning("bert-as-service's protocol on ports %d and %d has no keys%s, and ZeroMQ holds a whole message "
                     "before the door sees it: open these ports only to a trusted network", port_in, port_out,
                     " (its clients encode with the server's API key)" if self.config.api_key else "")
        tasks: set[asyncio.Task] = set()
        watcher = asyncio.create_task(self._watch_subscriptions())
        try:
            while True:
                frames = await receiver.recv_multipart()
                task = asyncio.create_task(self._answer(frames))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            watcher.cancel()
            for task in tasks:
                task.cancel()
            receiver.close()
            self._sender.close()
            self._context.term()

    async def _watch_subscriptions(self) -> None:
        while True:
            event = await self._sender.recv()
            if not event:
                continue
            topic = bytes(event[1:])
            count = self._subscribed.get(topic, 0) + (1 if event[0] == 1 else -1)
            if count > 0:
                self._subscribed[topic] = count
            else:
                self._subscribed.pop(topic, None)
            self._new_subscriber.set()
            self._new_subscriber = asyncio.Event()

    async def _publish(self, identity: bytes, *frames: bytes) -> None:
        deadline = time.monotonic() + _SUBSCRIBE_WAIT
        while identity not in self._subscribed and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._new_subscriber.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
        await self._sender.send_multipart([identity, *frames])

    async def _answer(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            _log.warning("bert-as-service: dropped a message of %d frames (the client sends 4)", len(frames))
            return
        identity, body, request_id, _ = frames
        self._clients.add(identity)
        try:
            if body == b"SHOW_CONFIG":
                answer = await self.models.call(self._server_config)
                await self._publish(identity, json.dumps(answer).encode(), request_id)
            elif body == b"SHOW_STATUS":
                await self._publish(identity, json.dumps(self._status()).encode(), request_id)
            else:
                header, data = await self._encode(body)
                await self._publish(identity, json.dumps(header).encode(), data, request_id)
        except Exception as exc:
            self._counts["num_failed_request"] += 1
            message = client_message(exc)
            # NumPy reads a dtype with a comma as a list of formats and raises ValueError, without the promised
            # TypeError "data type ... not understood".
            error = {"dtype": f"bertserve: {message}".replace(",", ";"), "shape": [0], "tokens": "", "error": message}
            await self._publish(identity, json.dumps(error).encode(), b"", request_id)

    async def _encode(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        try:
            texts = json.loads(body)
        except ValueError:
            raise InvalidInputError("the request is not a JSON list of sentences") from None
        if not isinstance(texts, list) or not texts:
            raise InvalidInputError("send a non-empty list of sentences")
        is_tokenized = all(isinstance(t, list) for t in texts)
        encoder = await self.models.call(self.models.encoder)
        info = _embedding(await self.models.call(encoder.info))
        # The client decides locally whether to show tokens, so they are always sent.
        encoded = await self.models.call(encoder.encode_detailed, texts, is_tokenized=is_tokenized,
                                         show_tokens=True, padded=info.token_level)
        if info.token_level:
            # bert-as-service's layout: [n, max_seq_len, dim], zeros past each input's tokens.
            block, _ = encoded.vectors
            vectors = np.zeros((len(texts), info.max_seq_len, info.dim), np.float32)
            vectors[:, : block.shape[1]] = block
        else:
            vectors = np.ascontiguousarray(encoded.vectors, dtype=np.float32)
        self._counts["num_request"] += 1
        self._counts["num_sentence"] += len(texts)
        return {"dtype": "float32", "shape": list(vectors.shape), "tokens": encoded.tokens}, vectors.tobytes()

    def _server_config(self) -> dict[str, Any]:
        protocol = {
            "server_version": BERT_AS_SERVICE_VERSION,  # the client refuses any other
            "bertserve_version": __version__,
            "show_tokens_to_client": True,
            "port": self.config.bert_as_service_ports[0],
            "port_out": self.config.bert_as_service_ports[1],
        }
        try:
            info = _embedding(self.models.encoder().info())
        except BertserveError as exc:
            # The client reads this on connecting and fails with a KeyError on an error answer: it gets the
            # protocol's part, so that it connects and its encode() raises with the reason.
            return {**protocol, "model": None, "max_seq_len": None, "error": client_message(exc)}
        return {
            **protocol,
            "model": info.name,
            "model_dir": info.source,  # the folder's name only: clients learn no server path
            "max_seq_len": info.max_seq_len,
            "max_batch_size": info.max_batch_size,
            "pooling_strategy": _POOLING.get(info.pooling, info.pooling),
            "pooling_layer": list(info.layers),
            "mask_cls_sep": info.mask_cls_sep,
            "dim": info.dim,
            "normalize": info.normalize,
            "precision": info.precision,
        }

    def _status(self) -> dict[str, Any]:
        uptime = time.time() - self._started
        return {
            "server_version": BERT_AS_SERVICE_VERSION,
            "bertserve_version": __version__,
            **self._counts,
            "num_client": len(self._clients),
            "num_subscribed": len(self._subscribed),
            "server_start_time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._started)),
            "uptime_s": round(uptime, 1),
            "avg_sentence_per_s": round(self._counts["num_sentence"] / max(uptime, 1e-9), 2),
        }


def _embedding(info: ModelInfo) -> ModelInfo:
    """`info`, if its model makes vectors: the protocol has nothing else to send (a rerank score is not one)."""
    if info.task != Task.EMBED:
        raise InvalidInputError(f"the model {info.name!r} is a {info.task} model; bert-as-service's protocol serves "
                                "embedding models: start the door with --bert-as-service-model naming one; use "
                                "the OpenAI door or the SDK for this one")
    return info
