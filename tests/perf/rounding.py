"""Check facts computed from unrounded figures against the rounded figures results.json and the table show.

results.json rounds throughput to 2 decimals and ratios to 3 (perf/report.py `_flat`); the facts keep every
digit. A ratio recomputed from two rounded figures is off by up to h/a + h/b relatively (h half the last
place), which no fixed tolerance covers on every machine: 319.07 / 32.18 misses the unrounded 9.91396 by
0.0012. These checks take the interval of every value a rounded figure can stand for instead, so they hold
for whatever figures a machine produces and still refuse a fact that no such figures give.
"""

from __future__ import annotations

import math
from typing import Optional

# Slack for the binary representation of decimal figures (e.g. 0.1 + 0.2), far below any rounding step here.
_FLOAT_SLACK = 1e-9


def shown_interval(shown: float, decimals: Optional[int]) -> tuple[float, float]:
    """The values that round to `shown` at `decimals` places; `None`: the figure is exact."""
    half = 0.0 if decimals is None else 0.5 * 10.0 ** -decimals
    return shown - half, shown + half


def ratio_interval(numerator: float, denominator: float, decimals: int) -> tuple[float, float]:
    """Every ratio a / b of positive a, b that round to `numerator` and `denominator` at `decimals` places."""
    low_n, high_n = shown_interval(numerator, decimals)
    low_d, high_d = shown_interval(denominator, decimals)
    return max(low_n, 0.0) / high_d, high_n / low_d if low_d > 0 else math.inf


def agrees(shown: float, shown_decimals: Optional[int], interval: tuple[float, float]) -> bool:
    """Whether `shown` (rounded to `shown_decimals` places, `None`: unrounded) can stand for a value in `interval`."""
    low, high = shown_interval(shown, shown_decimals)
    slack = _FLOAT_SLACK * max(abs(low), abs(high), 1.0)
    return low - slack <= interval[1] and interval[0] <= high + slack


def ratio_agrees(fact: float, numerator: float, denominator: float, decimals: int = 2) -> bool:
    """Whether `fact`, a ratio of unrounded figures, is the ratio of two figures shown rounded to `decimals`."""
    return agrees(fact, None, ratio_interval(numerator, denominator, decimals))
