"""What the server's statistics say, as `ServerStatus` reads them from Triton's statistics API."""

from __future__ import annotations

import pytest

from bertserve.errors import ModelNotFoundError
from bertserve.status import ServerStatus

_STATS = [{"name": "m", "inference_count": 3, "execution_count": 2,
           "inference_stats": {"success": {"count": 3, "ns": 0}, "cache_hit": {"count": 2, "ns": 0},
                               "cache_miss": {"count": 1, "ns": 0}}}]


def test_a_model_is_found_by_name_with_its_cache_counts():
    status = ServerStatus.from_triton({"version": "2.51.0"}, _STATS, {"m"}, unloaded=["idle"])
    found = status.model("m")
    assert (found.name, found.ready, found.requests, found.cache_hits, found.cache_misses) == ("m", True, 3, 2, 1)
    assert found.cache_hit_ratio == 2 / 3
    assert status.model("idle").cache_hit_ratio == 0.0  # no lookups: no ratio to divide by


def test_an_unknown_model_is_refused_naming_the_models_there_are():
    status = ServerStatus.from_triton({}, _STATS, set())
    with pytest.raises(ModelNotFoundError, match=r"no model 'x'; it has \['m'\]"):
        status.model("x")
