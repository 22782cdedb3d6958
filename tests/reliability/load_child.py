"""Run by test_load.py in a process of its own: `clients` closed-loop gRPC clients for `seconds`.

Each client sends a one-sentence request, and sends again as soon as it is answered (served or turned
away). Prints a JSON summary: admitted and turned-away counts, admitted latency percentiles, other errors.

    python -m tests.reliability.load_child URL API_KEY CLIENTS SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

MODEL = "all-MiniLM-L6-v2"
_BUSY = ("Exceeds maximum queue size", "Request timeout expired")  # a full queue, or too long in it


async def main(url: str, api_key: str, clients: int, seconds: float) -> dict:
    headers = {"triton-grpc-protocol-authorization": f"Bearer {api_key}"}
    tensor = aioclient.InferInput("text", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"one sentence from one of many clients"]], dtype=np.object_))
    admitted, busy, other = [], [], []
    stop = time.monotonic() + seconds
    async with aioclient.InferenceServerClient(url) as client:
        async def loop() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    await client.infer(MODEL, [tensor], headers=headers, client_timeout=60)
                    admitted.append(time.monotonic() - started)
                except InferenceServerException as exc:
                    turned_away = any(words in exc.message() for words in _BUSY)
                    (busy if turned_away else other).append(exc.message())
        await asyncio.gather(*(loop() for _ in range(clients)))
    return {"admitted": len(admitted), "busy": len(busy), "other": other[:5],
            "admitted_p50": float(np.percentile(admitted, 50)) if admitted else None,
            "admitted_p99": float(np.percentile(admitted, 99)) if admitted else None}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))))
