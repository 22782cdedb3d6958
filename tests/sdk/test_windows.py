"""long_input 'chunk': the windows an over-long item is split into, and the weighted mean of their vectors."""

from __future__ import annotations

import numpy as np
import pytest

from bertserve import contract
from bertserve._windows import Window, combine, plan_windows
from bertserve.errors import InvalidInputError


def test_only_over_long_items_are_split_into_windows_that_cover_every_token_once():
    # max_seq_len 10: 8 text tokens per window. Counts include [CLS] and [SEP].
    windows = plan_windows([5, 10, 11, 27], max_seq_len=10)
    assert windows == [Window(2, 0, 8), Window(2, 8, 1), Window(3, 0, 8), Window(3, 8, 8), Window(3, 16, 8),
                       Window(3, 24, 1)]


def test_an_item_past_the_character_budget_cannot_be_split():
    with pytest.raises(InvalidInputError, match="item 1 is longer than the 1,000 characters .* split it into shorter"):
        plan_windows([5, contract.NOT_COUNTED], max_seq_len=10)


def test_more_windows_than_the_bound_are_refused_naming_it():
    assert len(plan_windows([66], max_seq_len=10, max_windows=8)) == 8
    with pytest.raises(InvalidInputError, match=r"more than 8 windows of 8 tokens for this call \(item 0 has 65 tokens\)"):
        plan_windows([67], max_seq_len=10, max_windows=8)


@pytest.mark.parametrize("normalize", [False, True])
def test_a_windowed_item_gets_the_token_weighted_mean_of_its_windows(normalize):
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    windows = [Window(1, 0, 3), Window(1, 3, 1)]
    got = combine(vectors, windows, np.array([[2.0, 0.0], [0.0, 4.0]], np.float32), normalize)
    mean = np.array([1.5, 1.0]) if not normalize else np.array([1.5, 1.0]) / np.hypot(1.5, 1.0)
    np.testing.assert_allclose(got, [[1.0, 0.0], mean, [5.0, 5.0]], rtol=1e-6)
