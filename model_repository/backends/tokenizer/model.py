"""Triton Python backend: UTF-8 strings -> WordPiece ids, attention mask and segment ids.

Inputs per item: `text`; optionally `text_pair` (the second segment of a
pair, empty for none) and `is_tokenized` (then `text` is a JSON list of tokens,
mapped to ids as given, unknown ones to the unknown token). Outputs also carry
the tokens the encoder sees (after truncation) and each item's token count
before truncation, so clients can warn about or refuse truncated input.

All requests of a batch are tokenised in one fast-tokenizer call; each request
gets its rows back, padded only to its own longest item, or, when the model
lists length buckets (native encoder backends), up to the smallest bucket that
holds it, so that requests of similar length have equal shapes and merge. A request with bad
text gets an invalid-argument error (HTTP 400) that names the item; the others
in the batch are served normally.

Work per item is bounded: text beyond a character budget that covers
max_seq_len tokens is cut before tokenizing, and its count reported as
`contract.NOT_COUNTED` ("longer than max_seq_len").
"""

import json
import re
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

from bertserve import contract
from bertserve.model_repository.backends.failures import answer_failure

_LAST_SPACE = re.compile(r"\s\S*\Z")


def _decode(raw, index, what="text"):
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"input item {index} ({what}) is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "send text encoded as UTF-8"
        ) from None


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _segment_without_tokens(type_ids, pair):
    """Whether a segment kept no token but [CLS] and [SEP] (its text was only characters the tokenizer drops)."""
    second = sum(type_ids)  # the second segment and its [SEP] have type id 1
    first = len(type_ids) - second
    return first <= 2 or (pair and second <= 1)


def _cut(text, budget):
    """`text` within `budget` characters, cut after a whole word where one ends in the second half."""
    if len(text) <= budget:
        return text
    head = text[:budget]
    space = _LAST_SPACE.search(head)
    return head[: space.start()] if space and space.start() > budget // 2 else head


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = str(Path(args["model_repository"]) / args["model_version"] / "tokenizer.json")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} is missing; export the model again (bertserve export --overwrite)")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_padding()
        self.counter = Tokenizer.from_file(path)  # no truncation: counts the tokens of over-long input
        self.counter.no_padding()
        self.counter.no_truncation()
        self.max_len = int(params["max_seq_len"])
        self.budget = contract.char_budget(self.max_len)
        self.max_request_bytes = int(params.get(contract.MAX_REQUEST_BYTES, contract.DEFAULT_MAX_REQUEST_BYTES))
        buckets = params.get(contract.LENGTH_BUCKETS, "")
        self.buckets = tuple(int(b) for b in buckets.split(",")) if buckets else ()
        self.cls, self.sep, self.unk = params["cls_token"], params["sep_token"], params["unk_token"]
        self.vocab = self.tokenizer.get_vocab()

    def _item(self, index, raw_text, raw_pair, tokenized):
        """One item as what to tokenise (a string, a (first, second) pair, or a list of given tokens),
        and whether text was cut to the character budget."""
        text = _decode(raw_text, index)
        if tokenized:
            try:
                tokens = json.loads(text)
            except ValueError:
                tokens = None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
                raise ValueError(f"input item {index} is marked is_tokenized but is not a JSON list of non-empty tokens")
            return tokens, False
        pair = _decode(raw_pair, index, "text_pair") if raw_pair is not None else ""
        if not text.strip() or (raw_pair is not None and pair and not pair.strip()):
            raise ValueError(f"input item {index} is an empty string; send non-empty text")
        first, second = _cut(text, self.budget), _cut(pair, self.budget)
        return ((first, second) if pair else first), len(first) < len(text) or len(second) < len(pair)

    def _check_size(self, texts, pairs):
        size = sum(len(raw) for raw in texts) + (sum(len(raw) for raw in pairs) if pairs is not None else 0)
        if size > self.max_request_bytes:
            raise ValueError(f"the request carries {size:,} bytes of text, over the limit of {self.max_request_bytes:,} "
                             f"({contract.MAX_REQUEST_BYTES}); send fewer or shorter items per request")

    def _given_tokens(self, tokens):
        """bert-as-service's is_tokenized: tokens used as they are, never re-split."""
        kept = [t if t in self.vocab else self.unk for t in tokens[: self.max_len - 2]]
        seen = [self.cls] + kept + [self.sep]
        return [self.vocab[t] for t in seen], seen, len(tokens) + 2

    def execute(self, requests):
        try:
            return self._execute(requests)
        except Exception:
            return answer_failure(requests, "tokenizer")

    def _execute(self, requests):
        items, problems = [], {}
        for r, request in enumerate(requests):
            texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            pairs = _optional(request, "text_pair")
            flags = _optional(request, "is_tokenized")
            try:
                self._check_size(texts, pairs)
                items.append([
                    self._item(i, text, None if pairs is None else pairs[i], bool(flags[i]) if flags is not None else False)
                    for i, text in enumerate(texts)
                ])
            except ValueError as exc:
                problems[r] = str(exc)
                items.append([])

        flat = [(r, i, item, cut) for r, request_items in enumerate(items) for i, (item, cut) in enumerate(request_items)]
        encoded = iter(self.tokenizer.encode_batch([item for _, _, item, _ in flat if not isinstance(item, list)]))
        rows = []  # (ids, tokens, type_ids, untruncated count) per item
        for r, i, item, cut in flat:
            if isinstance(item, list):
                ids, tokens, count = self._given_tokens(item)
                rows.append((ids, tokens, [0] * len(ids), count))
                continue
            encoding = next(encoded)
            if not encoding.overflowing and _segment_without_tokens(encoding.type_ids, isinstance(item, tuple)):
                problems.setdefault(r, f"input item {i} has no text the tokenizer keeps (only whitespace, control or "
                                       "format characters); send text")
            count = len(encoding.ids)
            if cut:
                count = contract.NOT_COUNTED
            elif encoding.overflowing:
                count = len(self.counter.encode(*item).ids if isinstance(item, tuple) else self.counter.encode(item).ids)
            rows.append((encoding.ids, encoding.tokens, encoding.type_ids, count))

        responses, start = [], 0
        for r, request_items in enumerate(items):
            mine = rows[start : start + len(request_items)]
            start += len(request_items)
            if r in problems:
                error = pb_utils.TritonError(problems[r], pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            width = contract.bucket_width(max(len(ids) for ids, _, _, _ in mine), self.buckets)
            arrays = {
                "input_ids": np.zeros((len(mine), width), np.int64),
                "attention_mask": np.zeros((len(mine), width), np.int64),
                "token_type_ids": np.zeros((len(mine), width), np.int64),
                "tokens": np.full((len(mine), width), b"", dtype=np.object_),
                "token_count": np.array([[count] for _, _, _, count in mine], np.int64),
            }
            for row, (ids, tokens, type_ids, _) in enumerate(mine):
                arrays["input_ids"][row, : len(ids)] = ids
                arrays["attention_mask"][row, : len(ids)] = 1
                arrays["token_type_ids"][row, : len(ids)] = type_ids
                arrays["tokens"][row, : len(ids)] = [t.encode("utf-8") for t in tokens]
            tensors = [pb_utils.Tensor(name, value) for name, value in arrays.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
