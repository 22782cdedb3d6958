"""A lone client sending one request at a time never waits out Triton's batcher timer.

With a queue bound, Triton 2.51's dynamic batcher cannot prefetch: a request that arrives while a model's only
instance finishes its last batch can miss its wake-up and wait for the batcher's 500 ms timer. One request in 20
sent to a lone encoder instance did (1 in 100 through the ensemble, too rare to catch in a short test). Exports now
run two instances of each model: one is always free for a lone client.
"""

from __future__ import annotations

import time

import numpy as np
import tritonclient.grpc as grpcclient

from bertserve.model_repository.repository import TOKEN_TENSORS, component_names

from ..conftest import STREAM_NAME

_BATCHER_TIMER = 0.5  # seconds: Triton's dynamic batcher sleeps this long when no wake-up comes
_CALLS = 300


def _stalls(call) -> list[float]:
    """The latencies of `_CALLS` calls one after another that look like the batcher timer: at least most of it,
    and far above the median (so a slow machine's steady pace is not mistaken for it)."""
    latencies = []
    for _ in range(_CALLS):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    median = float(np.median(latencies))
    return [round(x, 3) for x in latencies if x >= max(0.8 * _BATCHER_TIMER, 20 * median)]


def test_a_lone_client_of_the_encoder_never_waits_for_the_batcher_timer(server):
    _, encoder = component_names(STREAM_NAME)
    inputs = []
    for name in TOKEN_TENSORS:
        tensor = grpcclient.InferInput(name, [1, 8], "INT64")
        tensor.set_data_from_numpy(np.ones((1, 8), np.int64))
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(server.grpc_url.split("://")[-1]) as client:
        stalls = _stalls(lambda: client.infer(encoder, inputs, client_timeout=30))
    # One pause of the machine is not the stall, which comes every second or two.
    assert len(stalls) <= 1, f"{len(stalls)} of {_CALLS} requests waited for the batcher's timer: {stalls}"

