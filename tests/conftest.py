"""Shared fixtures: the real all-MiniLM-L6-v2 weights, exported repositories and a real tritonserver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bertserve.export import ExportConfig, Pooling, export_model  # noqa: E402
from bertserve.server import ServerConfig, TritonServer, free_ports  # noqa: E402
from bertserve.server.default_model import default_model_dir  # noqa: E402

DEFAULT_NAME = "all-MiniLM-L6-v2"
TOKENS_NAME = "minilm-tokens"
STREAM_NAME = "minilm-stream"  # one layer, large batches: cheap enough to stream 100,000 sentences in a test
_PLAIN_BERT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json")




@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 (modules.json, pooling, normalize)."""
    return default_model_dir()


@pytest.fixture(scope="session")
def plain_bert_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights as a plain Hugging Face BERT folder, without the sentence-transformers files."""
    folder = tmp_path_factory.mktemp("plain") / "minilm-plain"
    folder.mkdir()
    for name in _PLAIN_BERT_FILES:
        shutil.copyfile(minilm_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def repository(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository, several models: the default, a token-level (pooling none) and a streaming variant."""
    repo = tmp_path_factory.mktemp("repo") / "repository"
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name=DEFAULT_NAME))
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name=TOKENS_NAME, pooling=Pooling.NONE,
                              normalize=False, max_seq_len=64))
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name=STREAM_NAME, layers=(-6,),
                              max_seq_len=16, max_batch_size=256))
    return repo


@pytest.fixture(scope="session")
def server(repository: Path):
    http, grpc, metrics = free_ports(3)
    config = ServerConfig(repository=repository, http_port=http, grpc_port=grpc, metrics_port=metrics, host="127.0.0.1")
    with TritonServer(config) as triton:
        yield triton
