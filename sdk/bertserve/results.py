"""What `Encoder.rerank`, `Encoder.classify` and `Encoder.encode_sparse` return: one small record per input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import InvalidInputError


@dataclass(frozen=True)
class Ranked:
    """One document of a rerank, with its relevance to the query."""

    index: int  # the document's position in `documents`
    score: float  # the sigmoid of the logit, in [0, 1]; the logit itself with raw_scores=True
    document: str  # the document as given
    token_count: int  # tokens the model saw for the (query, document) pair, after truncation
    truncated: bool  # the pair was longer than the model's max_seq_len and was cut


@dataclass(frozen=True)
class Label:
    """One label of a classification and its score."""

    label: str
    score: float  # the softmax over the labels; the logit itself with raw_scores=True


@dataclass(frozen=True)
class Classified:
    """One text's classification: every label of the model, best first."""

    labels: list[Label]
    token_count: int  # tokens the model saw, after truncation
    truncated: bool  # the text was longer than the model's max_seq_len and was cut

    @property
    def label(self) -> str:
        """The best label."""
        return self.labels[0].label


@dataclass(frozen=True)
class SparseVector:
    """One text's SPLADE vector: the vocabulary ids of its non-zero weights, ascending, and the weights."""

    indices: np.ndarray  # int64 vocabulary ids
    values: np.ndarray  # float32 weights, in the order of `indices`
    token_count: int  # tokens the model saw, after truncation
    truncated: bool  # the text was longer than the model's max_seq_len and was cut
    terms: Optional[list[str]] = None  # with encode_sparse(terms=True): the vocabulary token of each index

    def as_dict(self) -> dict[str, float]:
        """The vector as {token: weight}, for reading it or for search engines that index terms."""
        if self.terms is None:
            raise InvalidInputError("this vector has no terms; ask for them with encode_sparse(texts, terms=True)")
        return {term: float(value) for term, value in zip(self.terms, self.values)}
