"""Quieting libraries that log advice while the exporter logs its own progress."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Let `logger` through at ERROR only while the block runs."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
