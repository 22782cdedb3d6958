"""What the SDK, the exporter, the Triton backends and the front doors must agree on, across processes: every tensor
name and model parameter key, grouped by the model that reads it, and the defaults both sides use.

Importable without numpy or torch: the backends running inside tritonserver import it too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Optional

from .errors import ConfigError

# --- The tokenizer model (and the ensemble, which takes the same inputs) ------------------------------------------

# Inputs, one row per item. `text` is UTF-8; `text_pair` the second segment of a pair (empty: none); with
# `is_tokenized`, `text` is a JSON list of tokens used as given.
TEXT = "text"
TEXT_PAIR = "text_pair"
IS_TOKENIZED = "is_tokenized"
# Optional BOOL input per item: return the tokens the encoder sees (show_tokens). Without it, or false for every item
# of a request, the request's `tokens` output holds no strings (shape [n, 0]): building them costs a string per token.
RETURN_TOKENS = "return_tokens"
RETURN_TOKENS_FORMAT = 4  # the first export format (info.FORMAT_VERSION) whose models take it; older ones always send

# Optional STRING inputs per item. `truncation_direction`: which end of an over-long item is cut, "right" (the
# default) or "left". `prompt`: text put before the item (the first segment), "" for none; `prompt_name`: one of the
# model's prompts (PROMPTS) by name. With neither, the model's default prompt (DEFAULT_PROMPT_NAME) applies.
TRUNCATION_DIRECTION = "truncation_direction"
TRUNCATION_DIRECTIONS = ("right", "left")
PROMPT = "prompt"
PROMPT_NAME = "prompt_name"
# The most characters a request's prompt or prompt name may have. A prompt is an instruction ("query: ", a sentence
# or two) and travels with every item of a request: unbounded, one large prompt in a body would be copied per item.
MAX_PROMPT_CHARS = 4096
# Optional INT64 input per item, for encoding a long text in windows (long_input "chunk"): the item is the window of
# max_seq_len - 2 tokens of its text that starts at this token (0: the first), between [CLS] and [SEP]. Its
# token_count is the whole text's.
WINDOW = "window"
# The most windows one call may encode (long_input "chunk"), over all its items: a bound on the work one request
# can ask for.
DEFAULT_MAX_WINDOWS = 64

# Outputs besides the encoder's inputs: the tokens the encoder sees, and each item's token count before truncation.
TOKENS = "tokens"
TOKEN_COUNT = "token_count"
# An item longer than its character budget is cut before tokenizing and its tokens are not counted:
# its token_count is NOT_COUNTED, meaning "longer than max_seq_len". The budget covers max_seq_len
# tokens unless the text averages more characters per token than WordPiece's longest word (100).
CHARS_PER_TOKEN = 100
NOT_COUNTED = -1

# Parameters. MAX_SEQ_LEN is also the bertserve.json field of the same meaning.
MAX_SEQ_LEN = "max_seq_len"
CLS_TOKEN, SEP_TOKEN, UNK_TOKEN = "cls_token", "sep_token", "unk_token"  # the vocabulary's special tokens
# The model's prompts, a JSON object of name -> text (its sentence-transformers configuration's `prompts`), and the
# name of the one applied when a request names none ("" for none).
PROMPTS = "prompts"
DEFAULT_PROMPT_NAME = "default_prompt_name"
# The most bytes of text (all items, both segments) one request may carry.
MAX_REQUEST_BYTES = "max_request_bytes"
DEFAULT_MAX_REQUEST_BYTES = 32 << 20
# Comma-separated lengths each request is padded up to, empty for none. Set when the encoder is a native backend
# (onnxruntime, tensorrt), whose dynamic batcher merges only requests of equal shape: bucketed, requests of similar
# length share a shape. The Python-backend encoder takes ragged requests and needs none.
LENGTH_BUCKETS = "length_buckets"
DEFAULT_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


def prompt_too_long(name: str, length: int) -> str:
    """The refusal of a `name` (PROMPT or PROMPT_NAME) of `length` characters, over MAX_PROMPT_CHARS."""
    return (f"{name} is {length:,} characters, over the {MAX_PROMPT_CHARS:,} a prompt may have; "
            "put long text in the input itself")


def char_budget(max_seq_len: int) -> int:
    """Characters of one item that are tokenized at most."""
    return max_seq_len * CHARS_PER_TOKEN


def length_buckets(max_seq_len: int, buckets: tuple[int, ...] = DEFAULT_LENGTH_BUCKETS) -> tuple[int, ...]:
    """The padded lengths a model of `max_seq_len` uses: the buckets below it, and max_seq_len itself."""
    return tuple(b for b in sorted(buckets) if b < max_seq_len) + (max_seq_len,)


def bucket_width(width: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding `width` tokens (`width` itself beyond the largest)."""
    return next((b for b in buckets if b >= width), width)


# --- The encoder model --------------------------------------------------------------------------------------------

# Inputs (the tokenizer's outputs, in this order).
INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS = "input_ids", "attention_mask", "token_type_ids"
TOKEN_TENSORS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)

# Outputs, by the model's task (Task below); the ensemble passes them on under the same names.
# embed: one vector per item ([dim]), or per token ([tokens, dim]) for pooling `none`.
EMBEDDING = "embedding"
# rerank (a (query, document) pair per item) and classify: the head's raw logits, one per label ([labels]), and the
# scores made of them: the sigmoid for rerank (one label), the softmax over the labels for classify.
LOGITS = "logits"
SCORES = "scores"
# sparse (SPLADE): max over the item's tokens of log(1 + relu(MLM logits)), a vocabulary-sized vector sent as the
# vocabulary ids of its non-zero weights and the weights, largest first ([k] each). k is the most any item of the
# batch has; an item with fewer is padded with weight 0 (and id 0): a weight of 0 is padding, never an entry.
SPARSE_INDICES = "sparse_indices"
SPARSE_VALUES = "sparse_values"
# Optional output of sparse models on the Python backend: the vocabulary's token for each of sparse_indices (empty
# for padding), for a {token: weight} view. Built for requests that set return_tokens; others get no strings ([n, 0]).
SPARSE_TERMS = "sparse_terms"


class Task(str, Enum):
    """What a model computes, recorded with it at export: it decides the encoder's outputs."""

    EMBED = "embed"  # sentence or token vectors
    RERANK = "rerank"  # a relevance score per (query, document) pair: a cross-encoder with one label
    CLASSIFY = "classify"  # a score per label: a fine-tuned sequence-classification head
    SPARSE = "sparse"  # SPLADE vectors over the vocabulary, from a masked-LM head

    @property
    def outputs(self) -> tuple[str, ...]:
        """The encoder's (and ensemble's) outputs for this task."""
        return {Task.EMBED: (EMBEDDING,), Task.RERANK: (LOGITS, SCORES), Task.CLASSIFY: (LOGITS, SCORES),
                Task.SPARSE: (SPARSE_INDICES, SPARSE_VALUES)}[self]

# Parameters (Python backend). ENCODER_RUNTIME: what runs the exported graph, "onnxruntime", "openvino" or "torch".
# MAX_PADDING_RATIO: rows of a batch run in length groups padded to at most this many computed tokens per real one.
ENCODER_RUNTIME = "runtime"
MAX_PADDING_RATIO = "max_padding_ratio"
# OpenVINO runtime only: the precision OpenVINO computes in, "f32", "bf16" or "auto" (bf16 where the serving CPU has
# bf16 units), and its performance hint, "latency" or "throughput".
INFERENCE_PRECISION = "inference_precision"
PERFORMANCE_HINT = "performance_hint"


def parameters(config: Mapping[str, Any], *required: str) -> dict[str, str]:
    """A model's parameters from its Triton config (as a backend gets it, parsed from JSON), refusing a config
    without each of `required`: the writer, not the backend, decides every value."""
    found = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    missing = [key for key in required if key not in found]
    if missing:
        raise ConfigError(f"model {config.get('name')!r} has no parameter {', '.join(missing)}: it was exported by "
                          "another version of bertserve; export it again (bertserve export --overwrite)")
    return found


# --- Every model ----------------------------------------------------------------------------------------------------

# Backpressure defaults, per model: 512 waiting requests let 256 concurrent single-sentence clients through.
DEFAULT_MAX_QUEUE_SIZE = 512
DEFAULT_QUEUE_TIMEOUT = 10.0  # seconds

# --- Requests -------------------------------------------------------------------------------------------------------

# Headers. Triton's restricted gRPC protocols read headers under a fixed prefix.
API_KEY_HEADER = "authorization"
ADMIN_KEY_HEADER = "bertserve-admin-key"
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"
# Keys (API and admin) travel in Triton's flag syntax (apis:header=value) and in headers: no ':', ',', '=' or spaces.
_KEY = re.compile(r"[A-Za-z0-9._~+/-]{16,}")  # whole key: fullmatch, as `$` would let a final newline through


def check_key(name: str, key: Optional[str]) -> None:
    """Refuse a key (None: no key) that Triton's flags or a header could not carry unchanged."""
    if key is not None and not (isinstance(key, str) and _KEY.fullmatch(key)):
        raise ConfigError(f"{name} must be at least 16 letters, digits or '-_.~+/' characters")
