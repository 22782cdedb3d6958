"""The task heads (contract.Task) as traceable modules: a sequence-classification head for rerank and classify, and
SPLADE's masked-LM head for sparse vectors. Each graph returns the task's outputs in `Task.outputs` order."""

from __future__ import annotations

import copy

import torch
from torch import nn

from bertserve.contract import Task

from .graph import hidden_states


class ClassifierGraph(nn.Module):
    """`(input_ids, attention_mask, token_type_ids)` -> (logits, scores) of BertForSequenceClassification: BERT's
    pooler over [CLS] of the last layer, the classifier, then the sigmoid (rerank) or a softmax over labels."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        if task not in (Task.RERANK, Task.CLASSIFY):
            raise ValueError(f"a classification head serves rerank or classify, not {task.value}")
        self.task = task
        self.embeddings = model.bert.embeddings
        self.layers = nn.ModuleList(model.bert.encoder.layer)
        self.pooler = model.bert.pooler
        self.classifier = model.classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = hidden_states(self.embeddings, self.layers, input_ids, attention_mask, token_type_ids)[-1]
        logits = self.classifier(self.pooler(last[:, :1].float()))  # the head always computes in fp32
        scores = torch.sigmoid(logits) if self.task is Task.RERANK else torch.softmax(logits, dim=-1)
        return logits, scores

    def half_encoder(self, dtype: torch.dtype = torch.float16) -> ClassifierGraph:
        """Run embeddings and encoder layers in a 16-bit `dtype`; the pooler and classifier stay fp32."""
        self.embeddings.to(dtype)
        self.layers.to(dtype)
        return self


class SparseGraph(nn.Module):
    """`(input_ids, attention_mask, token_type_ids)` -> (sparse_indices, sparse_values): SPLADE's max over real
    tokens of log(1 + relu(MLM logits)), as the vocabulary ids of its non-zero weights and the weights, largest
    first. k, the width, is the most non-zero weights of any item in the batch, computed at run time: shorter items
    are padded with weight 0 and id 0."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embeddings = model.bert.embeddings
        self.layers = nn.ModuleList(model.bert.encoder.layer)
        # A copy: the MLM decoder's weight is tied to the word embeddings, which half_encoder lowers; the head's own
        # stays fp32.
        self.mlm = copy.deepcopy(model.cls)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return top_entries(self.dense(input_ids, attention_mask, token_type_ids))

    def dense(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor) -> torch.Tensor:
        """The vocabulary-sized SPLADE vectors, [batch, vocabulary]."""
        last = hidden_states(self.embeddings, self.layers, input_ids, attention_mask, token_type_ids)[-1]
        return splade(self.mlm(last.float()), attention_mask)  # the head always computes in fp32

    def half_encoder(self, dtype: torch.dtype = torch.float16) -> SparseGraph:
        """Run embeddings and encoder layers in a 16-bit `dtype`; the MLM head stays fp32."""
        self.embeddings.to(dtype)
        self.layers.to(dtype)
        return self


def splade(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """max over real tokens of log(1 + relu(logits)): [batch, tokens, vocabulary] -> [batch, vocabulary]."""
    weights = torch.log1p(torch.relu(logits)) * attention_mask.unsqueeze(-1).to(logits.dtype)
    return weights.max(dim=1).values  # padding gives 0, no more than any real token's weight


def top_entries(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zero entries of each row of `dense`, largest first, as (indices, values) as wide as the fullest row.

    k is a tensor: tracers (ONNX, TorchScript) record topk's k as computed, not as the traced batch's number. At
    least one column, so that a batch of empty vectors still has a shape every runtime takes (one padding entry).
    """
    k = (dense > 0).sum(dim=1).max().clamp(min=1)
    values, indices = torch.topk(dense, k, dim=1, largest=True, sorted=True)
    return indices * (values > 0).to(indices.dtype), values
