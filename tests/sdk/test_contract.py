"""contract.py's logic: the length buckets a native encoder backend sees, and the parameters a backend requires."""

from __future__ import annotations

import pytest

from bertserve import contract
from bertserve.contract import bucket_width, length_buckets
from bertserve.errors import ConfigError


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


def test_a_model_without_a_parameter_its_backend_requires_is_refused_saying_to_export_again():
    config = {"name": "m_tokenizer", "parameters": {contract.MAX_SEQ_LEN: {"string_value": "128"}}}
    assert contract.parameters(config, contract.MAX_SEQ_LEN) == {contract.MAX_SEQ_LEN: "128"}
    with pytest.raises(ConfigError, match=r"model 'm_tokenizer' has no parameter length_buckets, cls_token: .*"
                                          r"export it again \(bertserve export --overwrite\)"):
        contract.parameters(config, contract.MAX_SEQ_LEN, contract.LENGTH_BUCKETS, contract.CLS_TOKEN)
