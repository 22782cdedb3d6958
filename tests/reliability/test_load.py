"""Load beyond capacity: every client answered at 256, an immediate "busy" for what a full queue cannot hold,
queue timeouts that skip the work, and connections that vanish or crawl harm nobody."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from bertserve import Encoder, contract
from bertserve.server import TritonServer

from ..conftest import DEFAULT_NAME, crawling_clients, server_config, settled, steady
from .conftest import API_KEY, rss_mb, still_serves

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[2]
_FULL = "Exceeds maximum queue size"


def _tensor(module=aioclient, texts: tuple[bytes, ...] = (b"one sentence from one of many clients",)):
    tensor = module.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text] for text in texts], dtype=np.object_))
    return tensor


async def _burst(url: str, clients: int, api_key: Optional[str] = None, timeout_us: int = 0, model: str = DEFAULT_NAME,
                 texts: tuple[bytes, ...] = (b"one sentence from one of many clients",)):
    """`clients` requests of `texts` sent at once; (seconds from the burst's start to the answer, error message or
    None) for each."""
    headers = {"triton-grpc-protocol-authorization": f"Bearer {api_key}"} if api_key else None
    async with aioclient.InferenceServerClient(url) as client:
        started = time.monotonic()

        async def one():
            try:
                await client.infer(model, [_tensor(texts=texts)], headers=headers, client_timeout=120,
                                   **({"timeout": timeout_us} if timeout_us else {}))
                return time.monotonic() - started, None
            except InferenceServerException as exc:
                return time.monotonic() - started, exc.message()
        return await asyncio.gather(*(one() for _ in range(clients)))


@pytest.fixture(scope="module")
def small_queue(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A cheap model whose queues hold 2 requests, served with the supervisor, as `bertserve serve` runs it."""
    from bertserve.export import Deployment, ExportConfig, export_model

    repo = tmp_path_factory.mktemp("small-queue") / "repository"
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name="tiny",
                              deployment=Deployment(max_queue_size=2)))
    with TritonServer(server_config(repo, heal=True)) as triton:
        yield triton


def test_256_concurrent_clients_are_all_answered(guarded):
    def client(i: int) -> np.ndarray:
        with Encoder(guarded.grpc_url, model=DEFAULT_NAME, api_key=API_KEY, timeout=120) as enc:
            return enc.encode([f"sentence number {i} from its own client"])

    with ThreadPoolExecutor(256) as pool:
        results = list(pool.map(client, range(256)))
    assert len(results) == 256 and all(r.shape == (1, 384) for r in results)
    still_serves(guarded)


def test_a_full_queue_turns_the_excess_away_at_once(small_queue):
    """64 requests at once against queues of 2: each is served or turned away as busy, and a turned-away one is
    answered at arrival, before the admitted requests that were ahead of it in the queue."""
    text = " ".join(["one of many long sentences sent at the very same time"] * 12).encode()
    answers = asyncio.run(_burst(small_queue.grpc_url, 64, model="tiny", texts=(text,) * 64))
    busy = [seconds for seconds, error in answers if error and _FULL in error]
    served = [seconds for seconds, error in answers if error is None]
    assert len(busy) + len(served) == 64, {error for _, error in answers if error}  # busy is an error, not a hang
    assert busy and served, f"{len(served)} served, {len(busy)} turned away: the queue bound never showed"
    # A request turned away finds its queue full: the admitted ones in that queue are answered after it.
    assert max(busy) < max(served), (sorted(busy), sorted(served))
    assert small_queue._supervisor.reloads == 0, "overload is not a dead backend: nothing to reload"
    with Encoder(small_queue.grpc_url, model="tiny") as enc:
        assert enc.encode(["still serving"]).shape == (1, 64)


@pytest.mark.stress
def test_ten_times_that_load_gets_a_fast_busy_for_the_excess(guarded, capsys):
    # 2,560 clients in a process of their own, each sending again as soon as it is answered; meanwhile a few
    # more clients here, whose requests are timed alone. (An admitted probe waits seconds in the queue, so
    # one probing client alone may see only a busy answer or two on a slow machine.)
    probes = []
    headers = {"triton-grpc-protocol-authorization": f"Bearer {API_KEY}"}
    clients = [grpcclient.InferenceServerClient(guarded.grpc_url) for _ in range(4)]
    for client in clients:  # connected before the load
        client.infer(DEFAULT_NAME, [_tensor(grpcclient)], headers=headers, client_timeout=60)
    load = subprocess.Popen([sys.executable, "-m", "tests.reliability.load_child", guarded.grpc_url, API_KEY, "2560", "8"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)  # let the load build up

    def probe(client) -> None:
        while load.poll() is None:
            started = time.monotonic()
            try:
                client.infer(DEFAULT_NAME, [_tensor(grpcclient)], headers=headers, client_timeout=60)
                probes.append((time.monotonic() - started, None))
            except InferenceServerException as exc:
                probes.append((time.monotonic() - started, exc.message()))
            time.sleep(0.01)

    threads = [threading.Thread(target=probe, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a probe client did not finish within 120 s"
    for client in clients:
        client.close()
    out, err = load.communicate(timeout=120)
    assert load.returncode == 0, err[-2000:]
    summary = json.loads(out)
    busy = [seconds for seconds, error in probes if error and "Exceeds maximum queue size" in error]
    served = [seconds for seconds, error in probes if error is None]
    expired = [seconds for seconds, error in probes if error and "Request timeout expired" in error]
    with capsys.disabled():
        print(f"\n2,560 closed-loop clients for 8 s: {summary['admitted']} admitted (p50 {summary['admitted_p50']:.2f} s, "
              f"p99 {summary['admitted_p99']:.2f} s), {summary['busy']} turned away; 4 more clients meanwhile: "
              f"{len(served)} served, {len(busy)} turned away in p50 {np.percentile(busy, 50) * 1000:.1f} ms, "
              f"p90 {np.percentile(busy, 90) * 1000:.1f} ms, max {max(busy) * 1000:.1f} ms")
    # Served, or turned away: at once when the queue is full, or after the queue timeout (a slower machine's
    # queue of 512 may take longer than that to drain).
    assert not summary["other"] and len(busy) + len(served) + len(expired) == len(probes), probes
    assert summary["busy"] > 0 and len(busy) >= 5, "the queue bound never showed"
    # The queue timeout bounds the wait of the admitted: at most that long in each of the two models' queues.
    assert summary["admitted_p99"] < 2 * contract.DEFAULT_QUEUE_TIMEOUT + 5
    # Turned away at once, not after a wait in the queue. On 2 cores that also run the 2,560 clients, Triton's
    # gRPC threads fall behind (over runs here: p50 from 2 to 177 ms, p90 from 7 to 700 ms), so the bounds are
    # set by the admitted wait, which a request that had queued would reach: a quarter of it for the median,
    # half of it for the tail.
    assert np.percentile(busy, 50) < summary["admitted_p50"] / 4
    assert np.percentile(busy, 90) < summary["admitted_p50"] / 2
    assert guarded._supervisor.reloads == 0, "overload is not a dead backend: nothing to reload"
    still_serves(guarded)


def test_requests_that_time_out_in_the_queue_are_turned_away_not_computed(server):
    def encoder_inferences() -> int:
        with Encoder(server.grpc_url) as enc:
            (model,) = [m for m in enc.server_status().models if m.name == f"{DEFAULT_NAME}_encoder"]
            return model.inferences

    before = steady(encoder_inferences)
    answers = asyncio.run(_burst(server.grpc_url, 300, timeout_us=1000))  # 1 ms to get out of the queue
    expired = [error for _, error in answers if error and "Request timeout expired" in error]
    served = [error for _, error in answers if error is None]
    assert expired and len(expired) + len(served) == 300, {e for _, e in answers if e}
    settled(encoder_inferences, lambda n: n - before >= len(served))
    # Then steady: an expired request computed anyway would be recorded after the served ones.
    assert steady(encoder_inferences) - before == len(served), "requests turned away in the queue were computed anyway"


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_clients_vanishing_mid_request_leak_nothing(guarded):
    body = (b'{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":["gone before the answer"]}]}')
    request = (f"POST /v2/models/{DEFAULT_NAME}/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    still_serves(guarded)
    fds, rss = _open_fds(guarded.pid), steady(lambda: round(rss_mb(guarded.pid)))
    for _ in range(1000):
        with socket.create_connection(("127.0.0.1", guarded.config.http_port), timeout=10) as sock:
            sock.sendall(request)  # and close at once, without reading the answer
    still_serves(guarded)
    settled(lambda: _open_fds(guarded.pid), lambda n: n <= fds + 10, timeout=30)
    assert _open_fds(guarded.pid) <= fds + 10, "connections of vanished clients stay open"
    # 1,000 connections: a leak of 50 KB each shows.
    assert steady(lambda: round(rss_mb(guarded.pid))) - rss < 50


def test_slow_clients_holding_connections_do_not_block_others(guarded):
    with crawling_clients(guarded.config.http_port, "/v2/models/x/infer") as crawl:
        for _ in range(3):
            crawl()
            # Blocked by the crawlers, it would time out.
            with Encoder(guarded.http_url, model=DEFAULT_NAME, api_key=API_KEY, timeout=10) as enc:
                assert enc.encode(["served while 200 connections crawl"]).shape == (1, 384)
    still_serves(guarded)


def test_sdk_retries_busy_until_served(small_queue):
    """A queue of 2: most of 24 concurrent clients are turned away at first, and every one is served in the end."""
    start = threading.Barrier(24, timeout=60)  # all at once, however slowly the pool's threads start

    def client(i: int) -> np.ndarray:
        start.wait()
        return enc.encode([f"client {i} " * 40])

    with Encoder(small_queue.grpc_url, model="tiny", concurrency=1) as enc:
        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(client, range(24)))
        status = enc.status()
    assert all(r.shape == (1, 64) for r in results)
    assert status.retries > 0 and status.failures == 0 and status.requests == 24
