"""Length buckets: the shapes a native encoder backend sees."""

from __future__ import annotations

import pytest

from bertserve.contract import bucket_width, length_buckets


@pytest.mark.parametrize("max_seq_len, buckets", [
    (8, (8,)),
    (16, (16,)),
    (20, (16, 20)),
    (128, (16, 32, 64, 128)),
    (200, (16, 32, 64, 128, 200)),
    (512, (16, 32, 64, 128, 256, 512)),
])
def test_buckets_stop_at_max_seq_len_and_include_it(max_seq_len, buckets):
    assert length_buckets(max_seq_len) == buckets


@pytest.mark.parametrize("width, padded", [(1, 16), (16, 16), (17, 32), (33, 64), (64, 64), (65, 128), (128, 128)])
def test_a_request_is_padded_to_the_smallest_bucket_that_holds_it(width, padded):
    assert bucket_width(width, length_buckets(128)) == padded


def test_no_buckets_leaves_the_width_alone():
    assert bucket_width(37, ()) == 37
