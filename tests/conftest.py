"""Shared fixtures: real weights, exported repositories and real tritonservers.

Each model is exported once per session and reused. Tests that export real weights or talk to a
tritonserver are marked `server` (the `bertserve[server]` side of the package): a test using one of
the fixtures in `_SERVER_FIXTURES` is marked automatically, modules that export inline say so with
`pytestmark`. Tests that run external tools (kubectl, checkov, moto, docker-compose) are marked `tools`,
automatically through `_TOOL_FIXTURES`, and `tools` implies `server`. `pytest -m "not server"` runs the
pure-logic tests alone, in seconds: it starts no process and imports no torch (this file imports the
exporter only inside the fixtures that export, and a `not server` run fails if torch was imported).
`stress` tests (load far past capacity) run only when `-m` names them: `make stress`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, NoReturn, TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bertserve.model_repository.repository import component_names  # noqa: E402
from bertserve.server import DEFAULT_MODEL_NAME, ServerConfig, TritonServer  # noqa: E402
from bertserve.server.home import default_model_dir, default_repository  # noqa: E402

DEFAULT_NAME = DEFAULT_MODEL_NAME
TOKENS_NAME = "minilm-tokens"
# The small BERT: cheap enough to stream 50,000 sentences, yet 384 floats a vector (mean and max over 3 layers of
# 64), so that keeping vectors shows in memory; large batches; not normalised, so client-side normalising shows.
STREAM_NAME = "tiny-stream"
# A model of each task beyond embedding (contract.Task), small and seeded-random: see `rerank_dir` and the others.
RERANK_NAME = "tiny-rerank"
CLASSIFY_NAME = "tiny-classify"
SPARSE_NAME = "tiny-sparse"
# A sentence-transformers model whose configuration carries prompts (PROMPTS, DEFAULT_PROMPT_NAME): see `prompts_dir`.
PROMPTS_NAME = "tiny-prompts"
PROMPTS = {"query": "query: ", "passage": "passage: "}
DEFAULT_PROMPT_NAME = "query"
_PLAIN_BERT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json")
T = TypeVar("T")
_SERVER_FIXTURES = {"server", "throwaway_server", "repository", "default_home", "variants_repository", "tiny_bert_dir",
                    "rerank_dir", "classify_dir", "sparse_dir", "prompts_dir"}
# Fixtures that run an external tool: kubectl (tests/deploy `rendered`), moto and the AWS CLI (`s3`), docker-compose.
_TOOL_FIXTURES = {"rendered", "s3", "compose"}
# The test run's own stop grace period: a stop waits for it only where a request is still in flight.
TEST_STOP_TIMEOUT = 3.0


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they use; leave `stress` tests out unless `-m` asks for them."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _TOOL_FIXTURES & fixtures or item.get_closest_marker("tools"):
            item.add_marker(pytest.mark.tools)
            item.add_marker(pytest.mark.server)
        elif _SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.server)
    if "stress" not in (config.getoption("markexpr") or ""):
        stress = [item for item in items if item.get_closest_marker("stress")]
        if stress:
            config.hook.pytest_deselected(items=stress)
            items[:] = [item for item in items if not item.get_closest_marker("stress")]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A `-m "not server"` run promises pure logic: fail it if anything it imported pulled in torch."""
    if "not server" in (session.config.getoption("markexpr") or "") and "torch" in sys.modules:
        session.config.get_terminal_writer().line(
            "torch was imported by a `-m 'not server'` run: import the exporter (and torch) inside the fixtures "
            "or tests that need it, not at module level", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def unavailable(reason: str) -> NoReturn:
    """Skip for want of an optional tool; in CI (`CI` set), which must run every such test, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def server_config(repository: Path, **overrides) -> ServerConfig:
    """A loopback server on ports free right now; no supervisor unless asked, so its statistics count only tests;
    a short stop grace period (`TEST_STOP_TIMEOUT`) unless a test of the grace period passes its own."""
    return ServerConfig.loopback(repository, **{"heal": False, "stop_timeout": TEST_STOP_TIMEOUT, **overrides})


def settled(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Read until `done` holds or `timeout` passes: Triton records a request's statistics just after answering it."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def steady(read: Callable[[], T], interval: float = 0.1, timeout: float = 10.0) -> T:
    """Read until two reads `interval` apart agree: a baseline taken with nothing in flight, once the statistics
    of the requests just answered are recorded."""
    deadline = time.monotonic() + timeout
    value = read()
    while time.monotonic() < deadline:
        time.sleep(interval)
        value, previous = read(), value
        if value == previous:
            break
    return value


@contextlib.contextmanager
def crawling_clients(port: int, path: str, count: int = 200) -> Iterator[Callable[[], None]]:
    """`count` connections to an HTTP server on `port` that start a POST to `path` and never finish its headers
    (slowloris); yields a function that sends each of them one more header line."""
    crawlers: list[socket.socket] = []
    lines = iter(range(1 << 30))

    def crawl() -> None:
        line = b"X-Slow: %d\r\n" % next(lines)
        for sock in crawlers:
            sock.sendall(line)

    try:
        for _ in range(count):
            crawlers.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            crawlers[-1].sendall(b"POST %s HTTP/1.1\r\nHost: x\r\n" % path.encode())
        yield crawl
    finally:
        for sock in crawlers:
            sock.close()


def lines_until(stream: IO[str], last: str, timeout: float) -> list[str]:
    """Lines of `stream` up to one starting with `last`; fewer if the stream ends or `timeout` passes first."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
            if line.startswith(last):
                break
        lines.put("")  # the end

    threading.Thread(target=read, daemon=True).start()
    deadline, got = time.monotonic() + timeout, []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return got
        if not line:
            return got
        got.append(line)
        if line.startswith(last):
            return got


def copy_model(source: Path, target: Path, name: str) -> None:
    """Copy an exported model (ensemble, tokenizer, encoder) from one repository into another."""
    for folder in (name, *component_names(name)):
        shutil.copytree(source / folder, target / folder)


def make_tiny_bert(folder: Path, head: str = "BertModel", **shape: Any) -> Path:
    """A BERT folder with a WordPiece vocabulary trained on the test corpus and seeded random weights of `shape`
    (BertConfig's fields, id2label included). A plain `BertModel` comes in the layout of Google's converted releases
    (config.json, vocab.txt, pytorch_model.bin); a task `head` (a transformers class: BertForSequenceClassification,
    BertForMaskedLM) as transformers saves it (`architectures` in config.json, model.safetensors)."""
    import torch
    import transformers
    from tokenizers import BertWordPieceTokenizer

    from .corpus import sentences

    folder.mkdir()
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(sentences(240), vocab_size=400, min_frequency=1)
    wordpiece.save_model(str(folder))
    config = transformers.BertConfig(vocab_size=wordpiece.get_vocab_size(), num_attention_heads=4,
                                     max_position_embeddings=128, **shape)
    torch.manual_seed(0)
    if head == "BertModel":
        config.save_pretrained(folder)
        torch.save(transformers.BertModel(config).state_dict(), folder / "pytorch_model.bin")
        return folder
    model = getattr(transformers, head)(config)
    if head == "BertForMaskedLM":
        # Random MLM weights make nearly every logit of some token positive; a trained SPLADE head is sparse. A
        # negative bias (for initializer_range 0.2) leaves 10-50 non-zero weights a vector, fewer for shorter texts.
        with torch.no_grad():
            model.cls.predictions.bias.copy_(-2.5 + 0.2 * torch.randn_like(model.cls.predictions.bias))
    if head == "BertForSequenceClassification" and config.num_labels > 1:
        _center_labels(model, wordpiece, sentences(240))
    model.save_pretrained(folder)
    return folder


def _center_labels(model: Any, wordpiece: Any, texts: list[str]) -> None:
    """Shift a random classifier's bias by its mean logits over `texts`, so that each label wins some of them, as a
    trained classifier's do (random weights favour one label for every text)."""
    import torch

    wordpiece.enable_padding()
    wordpiece.enable_truncation(128)
    encodings = wordpiece.encode_batch(texts)
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor([e.ids for e in encodings]),
                              attention_mask=torch.tensor([e.attention_mask for e in encodings])).logits
        model.classifier.bias -= logits.mean(dim=0)


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
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BERT in the layout of Google's converted releases: config.json, vocab.txt, pytorch_model.bin.

    No tokenizer.json, tokenizer_config.json or safetensors: the tokenizer is built from vocab.txt alone.
    Its WordPiece vocabulary is trained on the test corpus; its weights are seeded random (no small
    trained BERT ships offline), which is enough to check an export against transformers.
    """
    folder = make_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert", hidden_size=64, num_hidden_layers=3,
                            intermediate_size=128)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    return folder


# Task models, each in its real layout, exported into `repository`: 2 layers of 32. Weights 10x BERT's initial
# spread, so that scores differ from text to text as a trained head's do (at BERT's 0.02 every pair scores alike).
_TINY_TASK_SHAPE = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=48, initializer_range=0.2)
TASK_MAX_SEQ_LEN = 32  # the CrossEncoder's and SparseEncoder's max_length: a pair of two sentences often passes it
CLASSIFY_LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="session")
def rerank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers CrossEncoder folder, as CrossEncoder.save writes it: a BertForSequenceClassification
    with one label (seeded random weights), max_length TASK_MAX_SEQ_LEN."""
    from sentence_transformers import CrossEncoder

    root = tmp_path_factory.mktemp("rerank")
    plain = make_tiny_bert(root / "plain", "BertForSequenceClassification", num_labels=1, **_TINY_TASK_SHAPE)
    CrossEncoder(str(plain), max_length=TASK_MAX_SEQ_LEN).save(str(root / "tiny-rerank"))
    return root / "tiny-rerank"


@pytest.fixture(scope="session")
def classify_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tuned classifier as transformers saves it (BertForSequenceClassification, id2label CLASSIFY_LABELS),
    seeded random weights; its tokenizer as the model's own, with no max length (so: the model's positions)."""
    from transformers import BertTokenizerFast

    labels = dict(enumerate(CLASSIFY_LABELS))
    folder = make_tiny_bert(tmp_path_factory.mktemp("classify") / "tiny-classify", "BertForSequenceClassification",
                            id2label=labels, label2id={v: k for k, v in labels.items()}, **_TINY_TASK_SHAPE)
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def sparse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers SparseEncoder (SPLADE) folder, as SparseEncoder.save writes MLMTransformer ->
    SpladePooling(max): a BertForMaskedLM (seeded random weights), max_seq_length TASK_MAX_SEQ_LEN."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    root = tmp_path_factory.mktemp("sparse")
    plain = make_tiny_bert(root / "plain", "BertForMaskedLM", **_TINY_TASK_SHAPE)
    modules = [MLMTransformer(str(plain), max_seq_length=TASK_MAX_SEQ_LEN), SpladePooling("max")]
    SparseEncoder(modules=modules).save(str(root / "tiny-sparse"))
    return root / "tiny-sparse"


@pytest.fixture(scope="session")
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers folder, as SentenceTransformer.save writes it: Transformer (a BertModel, seeded random
    weights, max_seq_length TASK_MAX_SEQ_LEN) -> mean Pooling, its configuration carrying PROMPTS and
    DEFAULT_PROMPT_NAME (and no others: sentence-transformers 6 adds empty "query" and "document" ones on save)."""
    import json

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    root = tmp_path_factory.mktemp("prompts")
    transformer = modules.Transformer(str(make_tiny_bert(root / "plain", **_TINY_TASK_SHAPE)),
                                      max_seq_length=TASK_MAX_SEQ_LEN)
    pooling = modules.Pooling(_TINY_TASK_SHAPE["hidden_size"], "mean")
    folder = root / PROMPTS_NAME
    SentenceTransformer(modules=[transformer, pooling]).save(str(folder))
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "prompts": PROMPTS, "default_prompt_name": DEFAULT_PROMPT_NAME}))
    return folder


@pytest.fixture(scope="session")
def default_home(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERTSERVE_HOME whose repository holds the default model alone, as `serve` finds it after its first use,
    exported with the reference encoder (ONNX Runtime fp32) on every CPU: the tests hold the served vectors to
    sentence-transformers' within 1e-4, which the bf16 default of CPUs with bf16 units does not meet.
    tests/server/test_default_model.py exports on first use with this CPU's own default."""
    from bertserve.export import Deployment, ExportConfig, Precision, Runtime, export_model

    home = tmp_path_factory.mktemp("home")
    export_model(ExportConfig(model_dir=minilm_dir, repository=home / "repository", name=DEFAULT_NAME,
                              precision=Precision.FP32, deployment=Deployment(runtime=Runtime.ONNXRUNTIME)))
    assert default_repository(home) == home / "repository", "serve would export the default model again"
    return home


@pytest.fixture(scope="session")
def repository(default_home: Path, minilm_dir: Path, tiny_bert_dir: Path, rerank_dir: Path, classify_dir: Path,
               sparse_dir: Path, prompts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository, several models: the default, a token-level one (pooling none), a cheap one for tests
    of the client rather than the model (streams, threads), a tiny model of each other task (rerank, classify,
    sparse) and one with prompts, each exported as its folder says with the default encoder (ONNX Runtime fp32)."""
    from bertserve.export import ExportConfig, Pooling, export_model

    repo = tmp_path_factory.mktemp("repo") / "repository"
    repo.mkdir()
    copy_model(default_home / "repository", repo, DEFAULT_NAME)
    export_model(ExportConfig(model_dir=minilm_dir, repository=repo, name=TOKENS_NAME, pooling=Pooling.NONE,
                              normalize=False, max_seq_len=64))
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=repo, name=STREAM_NAME, pooling=Pooling.MEAN_MAX,
                              layers=(-3, -2, -1), normalize=False, max_seq_len=16, max_batch_size=256))
    for name, folder in ((RERANK_NAME, rerank_dir), (CLASSIFY_NAME, classify_dir), (SPARSE_NAME, sparse_dir),
                         (PROMPTS_NAME, prompts_dir)):
        export_model(ExportConfig(model_dir=folder, repository=repo, name=name))
    return repo


@pytest.fixture(scope="session")
def variants_repository(default_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model and the variants `make bench` measures (int8, a shallow layer, length groups off)."""
    from perf.bench import export_models
    from perf.results import Settings

    repo = tmp_path_factory.mktemp("variants") / "repository"
    repo.mkdir()
    copy_model(default_home / "repository", repo, DEFAULT_NAME)
    export_models(Settings.quick(), repo)
    return repo


@pytest.fixture(scope="session")
def server(repository: Path):
    with TritonServer(server_config(repository)) as triton:
        yield triton


@pytest.fixture
def throwaway_server(default_home: Path):
    """A server of its own on the one-model repository, for a test that stops or breaks it."""
    with TritonServer(server_config(default_home / "repository")) as triton:
        yield triton
