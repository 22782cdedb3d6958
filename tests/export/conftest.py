"""Fixtures of the export tests: a tiny 6-layer BERT for the graph math, and transformers' hidden states for it.

The exporter imports torch (the bertserve[server] side), which a `-m "not server"` run must not import, while
export options (`bertserve.export`'s `ExportConfig`, `Pooling`, `plan_export`) import none: a test here that
exports, or runs torch, is marked `server` (through the fixtures below, the `_SERVER_FIXTURES` of the top conftest,
or a mark of its own) and imports the exporter and torch inside itself; the checks of options run in the fast run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import pytest

from ..conftest import make_tiny_bert
from ..corpus import sentences

if TYPE_CHECKING:
    from bertserve.export import ExportConfig
    from bertserve.info import ModelInfo

MAX_SEQ_LEN = 64
# Fixtures that need torch: the tiny BERT and its hidden states, and the exporter.
_TORCH_FIXTURES = {"tiny6_bert_dir", "tiny6_states", "export_model"}


def graph_texts() -> list[str]:
    """The batch every graph-math test encodes: it includes inputs past MAX_SEQ_LEN, so truncation is exercised too."""
    return sentences(24)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `server` the tests that use a fixture of `_TORCH_FIXTURES`."""
    for item in items:
        if _TORCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def export_model() -> Callable[[ExportConfig], ModelInfo]:
    """`bertserve.export.export_model`, imported by the tests that take it: it imports torch."""
    from bertserve.export import export_model

    return export_model


class States(NamedTuple):
    """transformers' view of `graph_texts()`: every hidden state (index 0 = embeddings), the model, the batch it
    ran, and the ids of [CLS] and [SEP] in the tokenizer's vocabulary."""

    hidden: list[np.ndarray]
    bert: object
    batch: dict[str, np.ndarray]
    cls_id: int
    sep_id: int


@pytest.fixture(scope="session")
def tiny6_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer BERT of hidden size 32, as deep as MiniLM (layer -6 is its first) at a fraction of its cost.

    Built like `tiny_bert_dir`: a WordPiece vocabulary trained on the test corpus, seeded random weights. Its
    intermediate size (48) and positions (128) differ from every other dimension, so the feed-forward matrices are
    the only initialisers of their shape.
    """
    return make_tiny_bert(tmp_path_factory.mktemp("tiny6") / "tiny6-bert", hidden_size=32, num_hidden_layers=6,
                          intermediate_size=48)


@pytest.fixture(scope="session")
def tiny6_states(tiny6_bert_dir: Path) -> States:
    """transformers' hidden states for `graph_texts()`, tokenised by the tokenizer an export of the tiny BERT builds."""
    from bertserve.export.tokenizer import build_tokenizer, encoder_inputs

    from . import reference

    prepared = build_tokenizer(tiny6_bert_dir, MAX_SEQ_LEN, False)
    batch = encoder_inputs(prepared.tokenizer, graph_texts())
    hidden, bert = reference.hidden_states(tiny6_bert_dir, batch)
    vocabulary = prepared.tokenizer  # the ids as the vocabulary has them, not as the exporter reads them
    return States(hidden, bert, batch, vocabulary.token_to_id("[CLS]"), vocabulary.token_to_id("[SEP]"))
