"""One real inference through a served model, whatever its task: what `bertserve health`, the supervisor's probe
and the door's /health run."""

from __future__ import annotations

from .client import Encoder
from .contract import Task

PROBE_TEXT = "bertserve health"


def probe(encoder: Encoder) -> None:
    """Run one item through `encoder`'s model with the call of its task; raises what the call raises."""
    task = Task(encoder.info().task)
    if task is Task.RERANK:
        encoder.rerank(PROBE_TEXT, [PROBE_TEXT])
    elif task is Task.CLASSIFY:
        encoder.classify([PROBE_TEXT])
    elif task is Task.SPARSE:
        encoder.encode_sparse([PROBE_TEXT])
    else:
        encoder.encode([PROBE_TEXT])
