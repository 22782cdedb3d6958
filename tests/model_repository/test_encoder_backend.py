"""The encoder backend against a real server: requests merge, length groups bound padding, results stay exact."""

from __future__ import annotations

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bertserve import Encoder
from bertserve.model_repository.deployment import Deployment, Runtime
from bertserve.server import TritonServer

from ..conftest import DEFAULT_NAME, copy_model, server_config, settled, steady


def _tokens(server, kind):
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    pattern = rf'bertserve_encoder_tokens_total\{{(?=[^}}]*kind="{kind}")(?=[^}}]*model="{DEFAULT_NAME}_encoder")[^}}]*\}} (\S+)'
    return float(re.search(pattern, text).group(1))


def test_mixed_lengths_run_in_groups_without_changing_results(server):
    short, long = "tiny", "a much longer sentence " * 40
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        alone = enc.encode([short])[0], enc.encode([long])[0]
        real, computed = _tokens(server, "real"), _tokens(server, "computed")
        together = enc.encode([short, long, short])
        real, computed = _tokens(server, "real") - real, _tokens(server, "computed") - computed
    assert np.abs(together[0] - alone[0]).max() <= 1e-5 and np.abs(together[1] - alone[1]).max() <= 1e-5
    assert real == 3 + 162 + 3  # [CLS] tiny [SEP] twice, and the long one at 162 tokens
    assert computed == real  # the short rows ran apart from the long one, not padded to 162


def _encoder_figures(enc):
    (encoder,) = [m for m in enc.server_status().models if m.name == f"{DEFAULT_NAME}_encoder"]
    return encoder.requests, encoder.inferences, encoder.executions


def test_dynamic_batcher_merges_concurrent_requests_of_different_lengths(server):
    from ..corpus import sentences  # imports the exporter, and torch: not at module level

    texts = sentences(64)  # 1 to 400 words: many different lengths
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        alone = [enc.encode([text])[0] for text in texts]
        requests, inferences, executions = steady(lambda: _encoder_figures(enc))
        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(lambda text: enc.encode([text])[0], texts))
        # Triton counts a batch's inferences after its requests: wait for both.
        after = settled(lambda: _encoder_figures(enc),
                        lambda figures: figures[0] - requests >= 64 and figures[1] - inferences >= 64)
    assert (after[0] - requests, after[1] - inferences) == (64, 64)
    assert after[2] - executions < 64, "concurrent requests of different lengths ran one execution each"
    assert np.abs(np.stack(together) - np.stack(alone)).max() <= 1e-5


@pytest.fixture(scope="module")
def runtimes(default_home, minilm_dir, variants_repository, tmp_path_factory):
    """One server for the runtime tests: the default model (ONNX Runtime), the same weights through PyTorch
    (TorchScript), and `make bench`'s OpenVINO exports (auto and static int8)."""
    from perf.bench import OPENVINO, OPENVINO_INT8  # perf imports the exporter: not at module level

    from bertserve.export import ExportConfig, export_model

    repo = tmp_path_factory.mktemp("runtimes") / "repository"
    repo.mkdir()
    copy_model(default_home / "repository", repo, DEFAULT_NAME)
    for name in (OPENVINO, OPENVINO_INT8):
        copy_model(variants_repository, repo, name)
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name="minilm-torch",
                              deployment=Deployment(runtime=Runtime.TORCH)))
    with TritonServer(server_config(repo)) as triton:
        yield triton


def test_the_torch_runtime_serves_what_onnx_runtime_serves(runtimes):
    """The same export through PyTorch (TorchScript) in the Python backend: equal vectors, on the CPU here."""
    from ..corpus import sentences

    texts = sentences(64)
    with Encoder(runtimes.grpc_url, model="minilm-torch") as enc:
        info = enc.info()
        torch_vectors = enc.encode(texts)
    with Encoder(runtimes.grpc_url, model=DEFAULT_NAME) as enc:
        onnx_vectors = enc.encode(texts)
    assert (info.backend, info.runtime) == ("python", "torch")
    assert torch_vectors.shape == onnx_vectors.shape == (64, 384)
    assert np.abs(torch_vectors - onnx_vectors).max() <= 1e-4


def test_the_openvino_runtime_serves_what_onnx_runtime_serves(runtimes):
    """OpenVINO in the Python backend, each batch split over its streams: fp32 here (auto on a CPU without bf16
    units) equals ONNX Runtime's vectors; static int8 stays within the int8 bar; concurrent requests of
    different lengths each get their own vectors back."""
    from perf.bench import OPENVINO, OPENVINO_INT8

    from bertserve.model_repository.backends.openvino import cpu_has_bf16

    from ..corpus import sentences

    texts = sentences(64)
    with Encoder(runtimes.grpc_url, model=DEFAULT_NAME) as enc:
        onnx_vectors = enc.encode(texts)
    with Encoder(runtimes.grpc_url, model=OPENVINO) as enc:
        info = enc.info()
        openvino_vectors = enc.encode(texts)
        with ThreadPoolExecutor(8) as pool:
            singles = np.concatenate(list(pool.map(lambda text: enc.encode([text]), texts[:16])))
    with Encoder(runtimes.grpc_url, model=OPENVINO_INT8) as enc:
        int8_vectors = enc.encode(texts)
    assert (info.runtime, info.precision) == ("openvino", "auto")
    assert openvino_vectors.shape == int8_vectors.shape == (64, 384)
    if cpu_has_bf16():
        assert (openvino_vectors * onnx_vectors).sum(axis=1).min() >= 0.999
    else:
        assert np.abs(openvino_vectors - onnx_vectors).max() <= 1e-4
    assert np.abs(singles - openvino_vectors[:16]).max() <= 1e-4
    cosine = (int8_vectors * onnx_vectors).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95
