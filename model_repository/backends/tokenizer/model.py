"""Triton Python backend: UTF-8 strings -> WordPiece ids, attention mask and segment ids.

Inputs per item: `text`; optionally `text_pair` (the second segment of a
pair, empty for none), `is_tokenized` (then `text` is a JSON list of tokens,
mapped to ids as given, unknown ones to the unknown token), `return_tokens`,
`truncation_direction` ("right" or "left": the end an over-long item loses) and
`prompt` or `prompt_name` (text put before the item; without either, the
model's default prompt, if it has one) and `window` (the item is the window of
its text's tokens starting at that token, for long inputs encoded in windows).
Outputs also carry each item's token count before truncation, so clients can
warn about or refuse truncated input, and, for a request that sets
`return_tokens`, the tokens the encoder sees (after truncation); other requests
get a `tokens` output of no strings (shape [n, 0]).

All requests of a batch are tokenised in one fast-tokenizer call, and their
arrays built from the flattened ids with numpy, not row by row: on the common
path (plain text or pairs) no Python runs per token. Each request
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
from itertools import chain
from typing import NamedTuple
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

from bertserve import contract
from bertserve.model_repository.backends.failures import answer_failure

_LAST_SPACE = re.compile(r"\s\S*\Z")
_FIRST_SPACE = re.compile(r"\A\S*\s")


def _decode(raw, index, what=contract.TEXT):
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"input item {index} ({what}) is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "send text encoded as UTF-8"
        ) from None


def _prompt(raw, index, what):
    """An item's prompt or prompt name, within contract.MAX_PROMPT_CHARS."""
    text = _decode(raw, index, what)
    if len(text) > contract.MAX_PROMPT_CHARS:
        raise ValueError(f"input item {index}: {contract.prompt_too_long(what, len(text))}")
    return text


class _Window(NamedTuple):
    """A window of a long text, encoded as `_given_tokens` encodes given tokens: ids, tokens, and the whole text's
    count."""

    ids: list
    tokens: list
    count: int


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _flat(lists, dtype):
    """The concatenation of `lists` as one numpy array."""
    return np.array(list(chain.from_iterable(lists)), dtype)


def _rows(flat, lengths, width, fill):
    """`flat` (the items' values one after another) as rows of `width`, each padded after its `lengths` values."""
    mask = np.arange(width) < lengths[:, None]
    rows = np.full((len(lengths), width), fill, dtype=flat.dtype)
    rows[mask] = flat
    return rows, mask


def _cut(text, budget, left=False):
    """`text` within `budget` characters, cut after a whole word where one ends in the second half; `left` keeps
    the end of the text instead of its start."""
    if len(text) <= budget:
        return text
    if left:
        tail = text[-budget:]
        space = _FIRST_SPACE.search(tail)
        return tail[space.end():] if space and space.end() <= budget // 2 else tail
    head = text[:budget]
    space = _LAST_SPACE.search(head)
    return head[: space.start()] if space and space.start() > budget // 2 else head


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = contract.parameters(config, contract.MAX_SEQ_LEN, contract.MAX_REQUEST_BYTES, contract.LENGTH_BUCKETS,
                                     contract.CLS_TOKEN, contract.SEP_TOKEN, contract.UNK_TOKEN)
        path = str(Path(args["model_repository"]) / args["model_version"] / "tokenizer.json")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} is missing; export the model again (bertserve export --overwrite)")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_padding()
        truncation = self.tokenizer.truncation
        self.left = Tokenizer.from_file(path)  # the same, truncating on the left
        self.left.no_padding()
        if truncation:
            self.left.enable_truncation(truncation["max_length"], stride=truncation["stride"],
                                        strategy=truncation["strategy"], direction="left")
        self.counter = Tokenizer.from_file(path)  # no truncation: counts the tokens of over-long input
        self.counter.no_padding()
        self.counter.no_truncation()
        # Only an item truncated to exactly this many tokens can have overflowed.
        self.truncated_len = truncation["max_length"] if truncation else None
        self.max_len = int(params[contract.MAX_SEQ_LEN])
        self.budget = contract.char_budget(self.max_len)
        self.max_request_bytes = int(params[contract.MAX_REQUEST_BYTES])
        buckets = params[contract.LENGTH_BUCKETS]
        self.buckets = tuple(int(b) for b in buckets.split(",")) if buckets else ()
        self.cls, self.sep, self.unk = (params[key] for key in (contract.CLS_TOKEN, contract.SEP_TOKEN, contract.UNK_TOKEN))
        self.vocab = self.tokenizer.get_vocab()
        self.prompts = json.loads(params.get(contract.PROMPTS) or "{}")
        self.default_prompt = self.prompts.get(params.get(contract.DEFAULT_PROMPT_NAME) or "", "")

    def _item(self, index, raw_text, raw_pair, tokenized, prefix, left, explicit, window=None):
        """One item as what to tokenise (a string, a (first, second) pair, or a list of given tokens),
        and whether text was cut to the character budget."""
        text = _decode(raw_text, index)
        if tokenized:
            if explicit:  # the default prompt is for text: given tokens never get it
                raise ValueError(f"input item {index} is marked is_tokenized: its tokens are used as given, so it "
                                 "takes no prompt; send text, or no prompt")
            try:
                tokens = json.loads(text)
            except ValueError:
                tokens = None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
                raise ValueError(f"input item {index} is marked is_tokenized but is not a JSON list of non-empty tokens")
            return tokens, False
        pair = _decode(raw_pair, index, contract.TEXT_PAIR) if raw_pair is not None else ""
        if not text.strip() or (raw_pair is not None and pair and not pair.strip()):
            raise ValueError(f"input item {index} is an empty string; send non-empty text")
        text = (prefix or "") + text
        if window is not None:
            if window < 0 or pair or len(text) > self.budget:
                raise ValueError(f"input item {index} has window {window}: a window starts at token 0 or later, of a "
                                 f"single text of at most {self.budget:,} characters")
            return self._window(text, int(window), index), False
        first, second = _cut(text, self.budget, left), _cut(pair, self.budget, left)
        return ((first, second) if pair else first), len(first) < len(text) or len(second) < len(pair)

    def _prefixes(self, request, count):
        """The prompt put before each of a request's items: the one it gives or names, else the default (None:
        no prompt at all); and whether the request chose it."""
        prompts, names = _optional(request, contract.PROMPT), _optional(request, contract.PROMPT_NAME)
        if prompts is None and names is None:
            return ([self.default_prompt] * count if self.default_prompt else None), False
        if prompts is not None and names is not None:
            raise ValueError(f"the request sends both {contract.PROMPT} and {contract.PROMPT_NAME}; send one of them")
        if prompts is not None:
            return [_prompt(raw, i, contract.PROMPT) for i, raw in enumerate(prompts)], True
        prefixes = []
        for i, raw in enumerate(names):
            name = _prompt(raw, i, contract.PROMPT_NAME)
            if name and name not in self.prompts:
                known = ", ".join(map(repr, sorted(self.prompts))) or "none"
                raise ValueError(f"input item {i} names the prompt {name!r}, which this model does not have (its "
                                 f"prompts: {known}); send one of them, or the prompt text itself")
            prefixes.append(self.prompts[name] if name else self.default_prompt)
        return prefixes, True

    def _lefts(self, request, count):
        """Which of a request's items are truncated on the left (None: none)."""
        directions = _optional(request, contract.TRUNCATION_DIRECTION)
        if directions is None:
            return None
        lefts = np.zeros(count, bool)
        for i, raw in enumerate(directions):
            direction = _decode(raw, i, contract.TRUNCATION_DIRECTION)
            if direction not in contract.TRUNCATION_DIRECTIONS:
                raise ValueError(f"input item {i} has {contract.TRUNCATION_DIRECTION} {direction[:40]!r}; send "
                                 + " or ".join(map(repr, contract.TRUNCATION_DIRECTIONS)))
            lefts[i] = direction == "left"
        return lefts if lefts.any() else None

    def _items(self, texts, pairs, flags, prefixes=None, lefts=None, explicit=False, windows=None):
        """One request's items as `_item` gives them, and masks of the items that are pairs and that were cut (None:
        none); for the whole request at once where it is plain text, item by item (for the exact error, given tokens
        or a cut) where anything is unusual."""
        if (flags is None or not flags.any()) and lefts is None and windows is None:
            try:
                firsts = [raw.decode("utf-8") for raw in texts]
                seconds = None if pairs is None else [raw.decode("utf-8") for raw in pairs]
            except (UnicodeDecodeError, AttributeError):
                firsts = None
            if firsts is not None and prefixes is not None and all(map(str.strip, firsts)):
                firsts = [prefix + first for prefix, first in zip(prefixes, firsts)]
            if (firsts is not None and all(map(str.strip, firsts)) and max(map(len, firsts)) <= self.budget
                    and (seconds is None or (all(map(str.strip, filter(None, seconds)))
                                             and max(map(len, seconds)) <= self.budget))):
                if seconds is None or not any(seconds):
                    return firsts, None, None
                items = [(first, second) if second else first for first, second in zip(firsts, seconds)]
                return items, np.fromiter(map(bool, seconds), bool, len(seconds)), None
        flags = np.zeros(len(texts), bool) if flags is None else flags.astype(bool)
        items = [self._item(i, text, None if pairs is None else pairs[i], bool(flags[i]),
                            None if prefixes is None else prefixes[i], lefts is not None and bool(lefts[i]), explicit,
                            None if windows is None else int(windows[i]))
                 for i, text in enumerate(texts)]
        return ([item for item, _ in items], np.array([isinstance(item, tuple) for item, _ in items]),
                np.array([cut for _, cut in items]))

    def _check_size(self, texts, pairs):
        size = sum(map(len, texts)) + (sum(map(len, pairs)) if pairs is not None else 0)
        if size > self.max_request_bytes:
            raise ValueError(f"the request carries {size:,} bytes of text, over the limit of {self.max_request_bytes:,} "
                             f"({contract.MAX_REQUEST_BYTES}); send fewer or shorter items per request")

    def _given_tokens(self, tokens, left=False):
        """bert-as-service's is_tokenized: tokens used as they are, never re-split."""
        room = self.max_len - 2
        kept = [t if t in self.vocab else self.unk for t in (tokens[-room:] if left else tokens[:room])]
        seen = [self.cls] + kept + [self.sep]
        return [self.vocab[t] for t in seen], seen, len(tokens) + 2

    def _window(self, text, start, index):
        """[CLS], up to max_seq_len - 2 of the tokens of `text` from token `start`, [SEP]."""
        whole = self.counter.encode(text)
        room = self.max_len - 2
        ids, tokens = whole.ids[1:-1][start : start + room], whole.tokens[1:-1][start : start + room]
        if not ids:
            raise ValueError(f"input item {index} has window {start}, past its text's {len(whole.ids) - 2} tokens")
        return _Window([self.vocab[self.cls]] + ids + [self.vocab[self.sep]], [self.cls] + tokens + [self.sep],
                       len(whole.ids))

    def execute(self, requests):
        try:
            return self._execute(requests)
        except Exception:
            return answer_failure(requests, "tokenizer")

    def _execute(self, requests):
        problems, parsed = {}, []  # parsed: (request index, items, pair mask, cut mask, whether tokens are wanted)
        for r, request in enumerate(requests):
            texts = pb_utils.get_input_tensor_by_name(request, contract.TEXT).as_numpy().reshape(-1)
            pairs = _optional(request, contract.TEXT_PAIR)
            flags = _optional(request, contract.IS_TOKENIZED)
            wanted = _optional(request, contract.RETURN_TOKENS)
            try:
                self._check_size(texts, pairs)
                lefts = self._lefts(request, len(texts))
                prefixes, explicit = self._prefixes(request, len(texts))
                items, is_pair, cut = self._items(texts, pairs, flags, prefixes, lefts, explicit,
                                                  _optional(request, contract.WINDOW))
            except ValueError as exc:
                problems[r] = str(exc)
                continue
            parsed.append((r, items, is_pair, cut, wanted is not None and bool(wanted.any()),
                           np.zeros(len(items), bool) if lefts is None else lefts))

        encodings = self._encode([item for _, items, *_ in parsed for item in items],
                                 np.concatenate([lefts for *_, lefts in parsed]) if parsed else np.zeros(0, bool))
        arrays, start = [None] * len(requests), 0
        for r, items, is_pair, cut, wanted, _ in parsed:
            mine = encodings[start : start + len(items)]
            start += len(items)
            arrays[r] = self._arrays(items, mine, is_pair, cut, wanted, r, problems)
        return [self._response(arrays[r], problems.get(r)) for r in range(len(requests))]

    def _encode(self, flat, lefts):
        """The encodings of `flat` items in order: text truncated on its item's side (`lefts`), and bert-as-service's
        pre-tokenized items (lists) as `_given_tokens` gives them. Plain text goes through one encode_batch."""
        plain = [i for i, item in enumerate(flat) if not isinstance(item, (list, _Window))]
        if len(plain) == len(flat) and not lefts.any():
            return self.tokenizer.encode_batch(flat)
        encodings = [None] * len(flat)
        for tokenizer, side in ((self.tokenizer, False), (self.left, True)):
            group = [i for i in plain if lefts[i] == side]
            for i, encoding in zip(group, tokenizer.encode_batch([flat[i] for i in group]) if group else []):
                encodings[i] = encoding
        for i, item in enumerate(flat):
            if isinstance(item, list):
                encodings[i] = self._given_tokens(item, bool(lefts[i]))
            elif isinstance(item, _Window):
                encodings[i] = item
        return encodings

    def _arrays(self, items, encodings, is_pair, cut, wanted, r, problems):
        """One request's output arrays from its items' encodings (tuples for given tokens), or None with its problem
        in `problems[r]`."""
        given = [isinstance(e, tuple) for e in encodings] if cut is not None else None
        if given is not None and any(given):
            ids = [e[0] if g else e.ids for e, g in zip(encodings, given)]
        else:
            given, ids = None, [e.ids for e in encodings]
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        width = contract.bucket_width(int(lengths.max()), self.buckets)
        input_ids, mask = _rows(_flat(ids, np.int64), lengths, width, 0)
        if is_pair is not None and is_pair.any():
            type_ids = [[0] * len(e[0]) if given and given[i] else e.type_ids for i, e in enumerate(encodings)]
            token_type_ids, _ = _rows(_flat(type_ids, np.int64), lengths, width, 0)
        else:
            token_type_ids = np.zeros_like(input_ids)

        # Overflowed: truncated to exactly truncated_len with tokens left over (only those are checked).
        overflowed = np.zeros(len(items), bool)
        if self.truncated_len is not None:
            for i in np.flatnonzero(lengths == self.truncated_len):
                overflowed[i] = not (given and given[i]) and bool(encodings[i].overflowing)
        # A segment that kept no token but [CLS] and [SEP]: its text was only characters the tokenizer drops.
        second = token_type_ids.sum(1)  # the second segment and its [SEP] have type id 1
        empty = ~overflowed & (lengths - second <= 2)
        if is_pair is not None:
            empty |= ~overflowed & is_pair & (second <= 1)
        if given:
            empty &= ~np.array(given)
        if empty.any():
            problems.setdefault(r, f"input item {int(np.argmax(empty))} has no text the tokenizer keeps (only "
                                   "whitespace, control or format characters); send text")
            return None

        counts = lengths.copy()
        recount = overflowed if cut is None else overflowed & ~cut  # a cut item is never counted: its work is bounded
        if recount.any():
            over = np.flatnonzero(recount)
            recounted = self.counter.encode_batch([items[i] for i in over])
            counts[over] = [len(e) for e in recounted]
        if given:
            counts[np.array(given)] = [e[2] for e, g in zip(encodings, given) if g]
        if cut is not None:
            counts[cut] = contract.NOT_COUNTED
        if wanted:
            tokens = [e[1] if given and given[i] else e.tokens for i, e in enumerate(encodings)]
            token_strings, _ = _rows(np.array([t.encode("utf-8") for t in chain.from_iterable(tokens)], np.object_),
                                     lengths, width, b"")
        else:
            token_strings = np.empty((len(items), 0), np.object_)
        return {
            contract.INPUT_IDS: input_ids,
            contract.ATTENTION_MASK: mask.astype(np.int64),
            contract.TOKEN_TYPE_IDS: token_type_ids,
            contract.TOKENS: token_strings,
            contract.TOKEN_COUNT: counts.reshape(-1, 1),
        }

    @staticmethod
    def _response(arrays, problem):
        if problem is not None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, v) for n, v in arrays.items()])
