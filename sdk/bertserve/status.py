"""What the server and the client report about themselves (bert-as-service's server_status / status)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import AbstractSet, Any, Mapping, Sequence

from bertserve.errors import ModelNotFoundError


@dataclass(frozen=True)
class ModelStatus:
    """One model's figures since the server started, from Triton's statistics API."""

    name: str
    ready: bool
    requests: int  # successful requests
    failures: int
    inferences: int  # items inferred (a batch of 8 counts 8)
    executions: int  # model runs (dynamic batching makes this smaller than requests)
    queue_ms: float  # mean time a request waited in the queue
    compute_ms: float  # mean time of the model's inference step per request
    # Requests answered from the response cache (served with --cache-size), and those looked up there and run.
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def cache_hit_ratio(self) -> float:
        """The share of cache lookups answered from the cache (0.0 without lookups)."""
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else 0.0


@dataclass(frozen=True)
class ServerStatus:
    version: str
    models: tuple[ModelStatus, ...]

    @classmethod
    def from_triton(
        cls, metadata: Mapping[str, Any], stats: Sequence[Mapping[str, Any]], ready: AbstractSet[str],
        unloaded: Sequence[str] = (),
    ) -> ServerStatus:
        """Combine server metadata, inference statistics (gRPC or HTTP JSON), the names of the ready models,
        and models the server holds without statistics (not loaded)."""
        counted = {entry["name"] for entry in stats}
        models = [ModelStatus(name, False, 0, 0, 0, 0, 0.0, 0.0) for name in set(unloaded) - counted]
        for entry in stats:
            inference = entry.get("inference_stats", {})
            success = _count(inference, "success")
            models.append(
                ModelStatus(
                    name=entry["name"],
                    ready=entry["name"] in ready,
                    requests=success,
                    failures=_count(inference, "fail"),
                    inferences=int(entry.get("inference_count", 0)),
                    executions=int(entry.get("execution_count", 0)),
                    queue_ms=_mean_ms(inference, "queue", success),
                    compute_ms=_mean_ms(inference, "compute_infer", success),
                    cache_hits=_count(inference, "cache_hit"),
                    cache_misses=_count(inference, "cache_miss"),
                )
            )
        return cls(version=str(metadata.get("version", "")), models=tuple(sorted(models, key=lambda m: m.name)))

    def model(self, name: str) -> ModelStatus:
        """Model `name`'s figures; `ModelNotFoundError` naming the models there are when the server has none."""
        for model in self.models:
            if model.name == name:
                return model
        raise ModelNotFoundError(f"the server's statistics have no model {name!r}; it has "
                                 f"{[m.name for m in self.models]}")

    def table(self) -> str:
        """A plain-text table for terminals."""
        lines = [f"Triton {self.version}",
                 f"{'model':<40} {'ready':<6} {'requests':>9} {'failures':>9} {'inferences':>11} "
                 f"{'executions':>11} {'queue ms':>9} {'compute ms':>11} {'cache hits':>11} {'misses':>9} {'hit %':>6}"]
        for m in self.models:
            cached = m.cache_hits + m.cache_misses
            lines.append(f"{m.name:<40} {'yes' if m.ready else 'no':<6} {m.requests:>9} {m.failures:>9} "
                         f"{m.inferences:>11} {m.executions:>11} {m.queue_ms:>9.2f} {m.compute_ms:>11.2f} "
                         f"{m.cache_hits:>11} {m.cache_misses:>9} "
                         + (f"{100 * m.cache_hit_ratio:>6.1f}" if cached else f"{'-':>6}"))
        return "\n".join(lines)


def _count(inference: Mapping[str, Any], key: str) -> int:
    return int(inference.get(key, {}).get("count", 0))


def _mean_ms(inference: Mapping[str, Any], key: str, requests: int) -> float:
    return int(inference.get(key, {}).get("ns", 0)) / 1e6 / requests if requests else 0.0


@dataclass(frozen=True)
class ClientStatus:
    """This client's counters since it was created."""

    requests: int = 0
    sentences: int = 0
    failures: int = 0
    retries: int = 0
    seconds: float = 0.0  # time spent in successful requests, summed over threads


class _ClientCounters:
    """Thread-safe running totals behind `Encoder.status()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = ClientStatus()

    def add(self, **amounts: float) -> None:
        with self._lock:
            self._status = replace(
                self._status, **{k: getattr(self._status, k) + v for k, v in amounts.items()}
            )

    def snapshot(self) -> ClientStatus:
        with self._lock:
            return self._status


__all__ = ["ClientStatus", "ModelStatus", "ServerStatus"]
