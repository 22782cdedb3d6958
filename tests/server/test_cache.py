"""The response cache (`serve --cache-size`): a repeated request is answered from it, equal to the computed answer,
counted in the status and on the metrics endpoint; a replaced model never gets the old model's answers."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

from bertserve import Encoder, contract
from bertserve.export import ExportConfig, Pooling, export_model
from bertserve.model_repository.repository import component_names
from bertserve.server import TritonServer

from ..conftest import DEFAULT_NAME, copy_model, server_config

TEXTS = ["the same question, asked again", "and a second one"]


def _metric(server: TritonServer, line_start: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])


@pytest.fixture
def cached(default_home, tmp_path):
    repo = tmp_path / "repository"
    repo.mkdir()
    copy_model(default_home / "repository", repo, DEFAULT_NAME)
    with TritonServer(server_config(repo, cache_size=1 << 20)) as triton:
        yield triton


def test_a_repeated_request_is_answered_from_the_cache_and_counted(cached):
    encoder_name = component_names(DEFAULT_NAME)[1]
    with Encoder(cached.grpc_url, model=DEFAULT_NAME) as encoder:
        computed = encoder.encode(TEXTS)
        executions = encoder.server_status().model(encoder_name).executions
        answered = encoder.encode(TEXTS)
        status = encoder.server_status()
    np.testing.assert_array_equal(answered, computed)  # bit for bit
    ensemble = status.model(DEFAULT_NAME)
    assert (ensemble.cache_hits, ensemble.cache_misses, ensemble.cache_hit_ratio) == (1, 1, 0.5)
    assert status.model(encoder_name).executions == executions  # the encoder did not run again
    assert "cache hits" in status.table() and " 50.0" in status.table()
    labels = f'{{model="{DEFAULT_NAME}",version="1"}}'
    assert _metric(cached, f"nv_cache_num_hits_per_model{labels}") == 1
    assert _metric(cached, f"nv_cache_num_misses_per_model{labels}") == 1


def test_a_replaced_model_never_answers_from_the_old_models_cache(cached, tiny_bert_dir):
    repo = cached.config.repository
    with Encoder(cached.grpc_url, model=DEFAULT_NAME) as encoder:
        old = encoder.encode(TEXTS)
    # Another model under the same name, loaded into the running server as an operator would.
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name=DEFAULT_NAME, pooling=Pooling.MEAN,
                              max_seq_len=32, overwrite=True))
    admin = httpclient.InferenceServerClient(cached.http_url.removeprefix("http://"), network_timeout=60)
    try:
        admin.load_model(DEFAULT_NAME, headers={contract.ADMIN_KEY_HEADER: cached.admin_key})
    finally:
        admin.close()
    with Encoder(cached.grpc_url, model=DEFAULT_NAME) as encoder:
        new = encoder.encode(TEXTS)
        again = encoder.encode(TEXTS)
        status = encoder.server_status()
    assert old.shape[1] == 384 and new.shape[1] == 64  # the new model's vectors, not the old model's cached ones
    np.testing.assert_array_equal(again, new)
    assert status.model(DEFAULT_NAME).cache_hits == 1  # counted afresh for the new version: the new model's own hit
