"""The response cache under a repeated-query load (issue 23): clients each sending one query per request, drawn at
random from a small pool, as RAG pipelines ask the same questions again.

The same load runs against the default model served without a cache and served with one (`ServerConfig.cache_size`);
the hits and misses are those the server counts for the ensemble, the model whose responses the cache holds.
"""

from __future__ import annotations

import itertools
import random
import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from bertserve import Encoder

NO_CACHE = "bertserve (Python SDK, gRPC), no cache"
CACHED = "bertserve (Python SDK, gRPC), response cache"
_DRAWS = 1 << 16  # the seeded sequence of pool indices the clients share, round and round


class RepeatedQueries:
    """Single-query requests drawn uniformly at random (seeded) from `pool`, shared by every client thread; counts
    the requests it sends and the distinct queries among them."""

    def __init__(self, pool: list[str], seed: int = 0) -> None:
        rng = random.Random(seed)
        self.pool = pool
        self._draws = [rng.randrange(len(pool)) for _ in range(_DRAWS)]
        self._turns = itertools.count()
        self._lock = threading.Lock()
        self.requests = 0
        self._asked: set[int] = set()

    @property
    def distinct(self) -> int:
        """How many of the pool's queries were sent at least once."""
        return len(self._asked)

    def call(self, encoder: Encoder) -> Callable[[], int]:
        """A timing-loop call: `encoder.encode` of the next drawn query alone; returns 1."""

        def ask() -> int:
            index = self._draws[next(self._turns) % _DRAWS]
            encoder.encode([self.pool[index]], progress=False)
            with self._lock:
                self.requests += 1
                self._asked.add(index)
            return 1

        return ask


def size_text(size: int) -> str:
    """A byte count as the report prints it: in MiB where whole."""
    return f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size:,} bytes"
