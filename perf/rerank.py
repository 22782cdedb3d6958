"""The rerank benchmark (issue 22): one query against many documents through the service, and in process with
sentence-transformers' `CrossEncoder.predict` on the same model.

The model is a cross-encoder of real size built offline: all-MiniLM-L6-v2's encoder and pooler under a seeded
random one-label head (`BertForSequenceClassification`), the architecture of cross-encoder/ms-marco-MiniLM-L6-v2.
Its scores mean nothing; its cost per pair is that of the real one, which is what the benchmark measures.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from bertserve import TruncationWarning
from bertserve.errors import ServerError

from .keepalive import KeepAliveClient

if TYPE_CHECKING:
    from bertserve import Encoder

RERANK_MODEL = "rerank"  # its name in the bench's repository
CROSS_ENCODER = "sentence-transformers CrossEncoder.predict (in-process)"
RERANK_SDK = "bertserve rerank (Python SDK, gRPC)"
RERANK_DOOR = "OpenAI front door /v1/rerank (plain HTTP client)"
QUERY = "How does a shared server encode many sentences quickly while clients wait for vectors?"
_HEAD_SEED, _HEAD_STD = 0, 0.02  # the head's weights: normal(0, std), as transformers initialises a new head


def cross_encoder_folder(model_dir: Path, folder: Path) -> Path:
    """`folder` as `CrossEncoder.save` writes it: the encoder and pooler of `model_dir` (a BERT, such as
    all-MiniLM-L6-v2) under a one-label classification head of seeded random weights; built once, then reused.

    The same `model_dir` always gives the same weights, so a run may build it again beside an export it reuses."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=1)
    generator = torch.Generator().manual_seed(_HEAD_SEED)
    with torch.no_grad():  # seeded here, whatever transformers' own initialisation of missing weights draws
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=generator) * _HEAD_STD)
        model.classifier.bias.zero_()
    with tempfile.TemporaryDirectory(prefix="bertserve-cross-encoder-") as plain:
        model.save_pretrained(plain)
        AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(plain)
        CrossEncoder(plain, device="cpu").save(str(folder))
    return folder


def documents(n: int) -> list[str]:
    """`n` documents from the varied corpus (short and long, some past the model's 512 tokens, non-ASCII, emoji)."""
    from bertserve.export.corpus import sentences

    return sentences(n)


class CrossEncoderBaseline:
    """`CrossEncoder.predict` on (query, document) pairs in the caller's process on the CPU, at its default batch
    size: the call a user of sentence-transformers makes to rerank."""

    name = CROSS_ENCODER

    def __init__(self, folder: Path) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(folder), device="cpu")

    def scores(self, query: str, docs: list[str]) -> np.ndarray:
        """The relevance score of each document, in their order: the sigmoid of the logit."""
        return np.asarray(self.model.predict([(query, doc) for doc in docs], show_progress_bar=False))

    def reranker(self, query: str, docs: list[str]) -> Callable[[], int]:
        """A timing-loop call: score every document and sort them, as a reranker must; returns the pairs scored."""
        return lambda: len(np.argsort(-self.scores(query, docs), kind="stable"))


def sdk_scores(encoder: Encoder, query: str, docs: list[str]) -> np.ndarray:
    """The relevance score of each document from `Encoder.rerank`, put back in the documents' order."""
    scores = np.full(len(docs), np.nan)
    for ranked in _rerank(encoder, query, docs):
        scores[ranked.index] = ranked.score
    return scores


def sdk_reranker(encoder: Encoder, query: str, docs: list[str]) -> Callable[[], int]:
    """A timing-loop call (one client thread): `Encoder.rerank` of every document; returns the pairs scored."""
    return lambda: len(_rerank(encoder, query, docs))


def _rerank(encoder: Encoder, query: str, docs: list[str]) -> list:
    """`Encoder.rerank`, quiet about the long documents it cuts to the model's length, as CrossEncoder is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return encoder.rerank(query, docs)


class DoorReranker:
    """POST /v1/rerank (Cohere's and Jina's body) with the standard library, one keep-alive connection per thread."""

    def __init__(self, base_url: str, model: str = RERANK_MODEL) -> None:
        address = urllib.parse.urlsplit(base_url)
        self._http = KeepAliveClient(str(address.hostname), int(address.port or 80), timeout=600)
        self._path, self._model = address.path.rstrip("/") + "/rerank", model

    def scores(self, query: str, docs: list[str]) -> np.ndarray:
        """The relevance score of each document, in their order."""
        scores = np.full(len(docs), np.nan)
        for result in self._results(self._body(query, docs)):
            scores[result["index"]] = result["relevance_score"]
        return scores

    def reranker(self, query: str, docs: list[str]) -> Callable[[], int]:
        """A timing-loop call: one request ranking every document; returns the pairs scored."""
        body = self._body(query, docs)
        return lambda: len(self._results(body))

    def _body(self, query: str, docs: list[str]) -> bytes:
        return json.dumps({"model": self._model, "query": query, "documents": docs}).encode()

    def _results(self, body: bytes) -> list[dict]:
        status, answer = self._http.post(self._path, body)
        if status != 200:
            raise ServerError(f"the front door answered {status} to POST {self._path}: {answer[:300]!r}; "
                                    "is the rerank model in the repository it serves?")
        return json.loads(answer)["results"]
