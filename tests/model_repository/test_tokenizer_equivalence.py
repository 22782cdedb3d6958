"""The served tokenizer model against in-process Hugging Face `tokenizers` on its own tokenizer.json, item by item:
ids, masks, segments, truncation, counts, tokens and errors for varied text, pairs, pre-tokenized and hostile input,
sent concurrently so the dynamic batcher tokenizes many requests in one batch; and tokens only on demand."""

from __future__ import annotations

import json
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from bertserve import Encoder, contract
from bertserve.info import ModelInfo
from bertserve.model_repository.config import parse
from bertserve.model_repository.repository import component_names, model_configs

from ..conftest import DEFAULT_NAME, STREAM_NAME, settled
from ..corpus import sentences

# Text the tokenizer must treat exactly as in process: control, format, bidi and zero-width characters, emoji,
# CJK, ligatures, special-token look-alikes, words past WordPiece's 100 characters.
HOSTILE = ["nul \x00 inside", "bidi \u202eevil\u202c text", "zero\u200bwidth\u200djoin", "emoji 🙂🚀👍🏽",
           "中文和日本語のテキスト", "tabs\tand\nnewlines", "[PAD] [CLS] [SEP] [MASK] [UNK] [pad]", "ǅ Ⅻ ﬁ ＡＢＣ",
           "a" * 150 + " b", "\u0301\u0301 accents alone", "  padded   with   spaces  "]
PAIRS = [("How old are you?", "What is your age?"), ("The cat sat on the mat.", "短い文 🙂"),
         ("word " * 300, "a short second sentence"), ("a short first sentence", "token " * 400),
         ("\u200b only format then", "x"), ("one", "two")]
GIVEN = [["hello", "unaffable", "world"], ["the", "cat", "##s"], ["完全", "是"], ["[CLS]", "x"], ["t"] * 300]


@dataclass(frozen=True)
class Request:
    texts: list[str]
    pairs: Optional[list[str]] = None
    tokenized: bool = False
    tokens: bool = False  # return_tokens
    raw: Optional[list[bytes]] = None  # `text` as raw bytes (invalid UTF-8)
    left: Optional[bool] = None  # truncation_direction, "left" or "right" for every item (None: not sent)
    prompt: Optional[str] = None
    prompt_name: Optional[str] = None
    windows: Optional[list[int]] = None  # per item, the token its window starts at


@dataclass(frozen=True)
class Expected:
    ids: list[int]
    type_ids: list[int]
    tokens: list[str]
    count: int


class Reference:
    """What the tokenizer model must answer, computed in process from the served tokenizer.json."""

    def __init__(self, tokenizer_file: Path, max_seq_len: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.left = Tokenizer.from_file(str(tokenizer_file))
        self.left.no_padding()
        self.left.enable_truncation(max_seq_len, direction="left")
        self.counter = Tokenizer.from_file(str(tokenizer_file))
        self.counter.no_padding()
        self.counter.no_truncation()
        self.max_seq_len = max_seq_len

    def item(self, text: str, pair: str = "", tokenized: bool = False, left: bool = False, prompt: str = "",
             window: Optional[int] = None) -> Expected:
        if window is not None:  # tokens [window, window + max_seq_len - 2) of the whole text, between [CLS] and [SEP]
            whole = self.counter.encode(prompt + text)
            ids = whole.ids[1:-1][window : window + self.max_seq_len - 2]
            tokens = whole.tokens[1:-1][window : window + self.max_seq_len - 2]
            return Expected(whole.ids[:1] + ids + whole.ids[-1:], [0] * (len(ids) + 2),
                            whole.tokens[:1] + tokens + whole.tokens[-1:], len(whole.ids))
        if tokenized:
            given = json.loads(text)
            room = self.max_seq_len - 2
            kept = ["[CLS]"] + [t if self.tokenizer.token_to_id(t) is not None else "[UNK]"
                                for t in (given[-room:] if left else given[:room])] + ["[SEP]"]
            return Expected([self.tokenizer.token_to_id(t) for t in kept], [0] * len(kept), kept, len(given) + 2)
        segments = (prompt + text, pair) if pair else (prompt + text,)
        encoding = (self.left if left else self.tokenizer).encode(*segments)
        over_budget = max(map(len, segments)) > contract.char_budget(self.max_seq_len)
        count = contract.NOT_COUNTED if over_budget else len(self.counter.encode(*segments).ids)
        return Expected(encoding.ids, encoding.type_ids, encoding.tokens, count)


def _requests(corpus: list[str]) -> list[Request]:
    plain = [Request(corpus[i : i + 16]) for i in range(0, len(corpus), 16)]
    return plain + [
        Request(corpus[:40], tokens=True),
        Request(HOSTILE),
        Request(HOSTILE, tokens=True),
        Request([a for a, _ in PAIRS], [b for _, b in PAIRS], tokens=True),
        Request(corpus[:8], corpus[8:12] + [""] * 4),  # some items with a pair, some without
        Request([json.dumps(g) for g in GIVEN], tokenized=True, tokens=True),
        Request([json.dumps(g) for g in GIVEN], tokenized=True),
        Request(["word " * 2000, "short", "x" * 30_000], tokens=True),  # past the character budget of both models
        # The other end of over-long items kept: text, pairs, given tokens, past the character budget.
        Request(corpus[:12] + ["first words " + "word " * 300 + "last words"], tokens=True, left=True),
        Request([a for a, _ in PAIRS], [b for _, b in PAIRS], tokens=True, left=True),
        Request([json.dumps(g) for g in GIVEN], tokenized=True, tokens=True, left=True),
        Request(["start " + "word " * 2000 + " end", "x" * 30_000], tokens=True, left=True),
        Request(corpus[:12], tokens=True, left=False),  # "right", sent: the default's own behaviour
        Request(corpus[:8] + ["over " * 300], tokens=True, prompt="query: "),  # a prompt before each item
        Request([a for a, _ in PAIRS], [b for _, b in PAIRS], tokens=True, prompt="a prompt: ", left=True),
        Request(corpus[:4], prompt_name=""),  # no name: the default prompt (none for these models)
        # Windows of a long text (long_input "chunk"), the last one short; with a prompt before the text.
        Request(["one long text, " * 60] * 4 + [corpus[0]], tokens=True, windows=[0, 14, 28, 100, 0]),
        Request(["query text " * 40] * 2, tokens=True, prompt="query: ", windows=[0, 14]),
    ]


# Requests that fail, each with the words its error must carry; they are sent among the good ones.
BAD = [
    (Request(["fine", "   "]), "input item 1 is an empty string"),
    (Request(["fine", "ok", "\x00\x01\x02\x7f"]), "input item 2 has no text the tokenizer keeps"),
    (Request(["fine", "\u200b\u200d\ufeff\u2060"]), "input item 1 has no text the tokenizer keeps"),
    (Request(["fine", "x"], ["", "\u200b"]), "input item 1 has no text the tokenizer keeps"),
    (Request(["fine", "x"], ["", "  "]), "input item 1 is an empty string"),
    (Request(["x", "y"], raw=[b"fine", b"broken \xff\xfe"]), r"input item 1 (text) is not valid UTF-8"),
    (Request(['["ok"]', "not json"], tokenized=True), "input item 1 is marked is_tokenized"),
    (Request(["fine", "x"], prompt_name="query"), "input item 0 names the prompt 'query', which this model does not have"),
    (Request(["fine"], prompt="q: ", prompt_name="query"), "send one of them"),
    (Request(['["ok"]'], tokenized=True, prompt="query: "), "input item 0 is marked is_tokenized: its tokens are used"),
    (Request(["short text", "short"], windows=[0, 50]), "input item 1 has window 50, past its text's"),
    (Request(["a", "b"], ["c", "d"], windows=[0, 0]), "input item 0 has window 0: a window starts at token 0 or later, of a single text"),
    (Request(["a"], windows=[-1]), "input item 0 has window -1"),
    (Request(["fine"], prompt="p" * (contract.MAX_PROMPT_CHARS + 1)), "input item 0: prompt is 4,097 characters"),
    (Request(["fine"], prompt_name="n" * (contract.MAX_PROMPT_CHARS + 1)), "input item 0: prompt_name is 4,097 char"),
]


def _inputs(request: Request, module=grpcclient) -> list:
    def tensor(name: str, values: np.ndarray) -> object:
        infer_input = module.InferInput(name, list(values.shape), {np.dtype(np.bool_): "BOOL", np.dtype(np.int64): "INT64"}
                                        .get(values.dtype, "BYTES"))
        infer_input.set_data_from_numpy(values)
        return infer_input

    n = len(request.texts)
    raw = request.raw or [t.encode("utf-8") for t in request.texts]
    inputs = [tensor("text", np.array(raw, dtype=np.object_).reshape(n, 1))]
    if request.pairs is not None:
        inputs.append(tensor("text_pair", np.array([p.encode() for p in request.pairs], dtype=np.object_).reshape(n, 1)))
    if request.tokenized:
        inputs.append(tensor("is_tokenized", np.ones((n, 1), np.bool_)))
    if request.tokens:
        inputs.append(tensor(contract.RETURN_TOKENS, np.ones((n, 1), np.bool_)))
    strings = {contract.PROMPT: request.prompt, contract.PROMPT_NAME: request.prompt_name,
               contract.TRUNCATION_DIRECTION: None if request.left is None else ("left" if request.left else "right")}
    for name, value in strings.items():
        if value is not None:
            inputs.append(tensor(name, np.array([value.encode()] * n, dtype=np.object_).reshape(n, 1)))
    if request.windows is not None:
        inputs.append(tensor(contract.WINDOW, np.array(request.windows, np.int64).reshape(n, 1)))
    return inputs


def _send_all(url: str, model: str, requests: list[Request]) -> list:
    """Every request in flight at once (the dynamic batcher merges them); each one's result or exception."""
    with grpcclient.InferenceServerClient(url) as client:
        answers: dict[int, object] = {}

        def done(index: int, result, error) -> None:
            answers[index] = error if error is not None else result

        for index, request in enumerate(requests):
            client.async_infer(model, _inputs(request), lambda result, error, i=index: done(i, result, error),
                               client_timeout=120)
        settled(lambda: len(answers), lambda n: n == len(requests), timeout=120)
    assert len(answers) == len(requests), "not every request was answered"
    return [answers[i] for i in range(len(requests))]


def _check(reference: Reference, request: Request, result) -> None:
    assert not isinstance(result, InferenceServerException), result.message()
    got = {name: result.as_numpy(name) for name in
           ("input_ids", "attention_mask", "token_type_ids", "tokens", "token_count")}
    pairs = request.pairs or [""] * len(request.texts)
    width = got["input_ids"].shape[1]
    expect = partial(reference.item, tokenized=request.tokenized, left=bool(request.left), prompt=request.prompt or "")
    windows = request.windows or [None] * len(request.texts)
    for row, (text, pair, window) in enumerate(zip(request.texts, pairs, windows)):
        want = expect(text, pair, window=window)
        n, pad = len(want.ids), width - len(want.ids)
        where = f"item {row}, {text[:40]!r} / {pair[:40]!r}"
        assert got["input_ids"][row].tolist() == want.ids + [0] * pad, where
        assert got["attention_mask"][row].tolist() == [1] * n + [0] * pad, where
        assert got["token_type_ids"][row].tolist() == want.type_ids + [0] * pad, where
        assert got["token_count"][row].tolist() == [want.count], where
        if request.tokens:
            assert [t.decode() for t in got["tokens"][row]] == want.tokens + [""] * pad, where
    assert max(len(expect(t, p, window=w).ids) for t, p, w in zip(request.texts, pairs, windows)) == width
    if not request.tokens:  # no strings built for a request that did not ask for them
        assert got["tokens"].shape == (len(request.texts), 0)


@pytest.fixture(scope="module", params=[DEFAULT_NAME, STREAM_NAME])
def served(request, server):
    """The server, the tokenizer model's name, and the reference from its served tokenizer.json and max_seq_len."""
    tokenizer_name, _ = component_names(request.param)
    with Encoder(server.grpc_url, model=request.param) as encoder:
        max_seq_len = encoder.info().max_seq_len
    tokenizer_file = Path(server.config.repository) / tokenizer_name / "1" / "tokenizer.json"
    return server, tokenizer_name, Reference(tokenizer_file, max_seq_len)


def test_the_served_tokenizer_equals_hugging_face_tokenizers_item_by_item(served):
    server, model, reference = served
    requests = _requests(sentences(240)) + [bad for bad, _ in BAD]
    answers = _send_all(server.grpc_url, model, requests)
    for request, answer in zip(requests, answers[: len(requests) - len(BAD)]):
        _check(reference, request, answer)
    for (request, words), answer in zip(BAD, answers[len(requests) - len(BAD):]):
        assert isinstance(answer, InferenceServerException) and words in answer.message(), (request, answer)
        assert "INVALID_ARGUMENT" in str(answer.status())


def test_tokens_travel_only_when_asked_for(server):
    """Through the ensemble, on both protocols: a plain request's `tokens` output holds no strings; one that sets
    return_tokens gets the tokens, as the SDK's show_tokens does."""
    texts = ["The cat sat on the mat.", "a second, longer sentence for the batch"]
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as encoder:
        _, shown = encoder.encode(texts, show_tokens=True)
    assert shown[0] == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
    width = max(map(len, shown))
    for module, url in ((grpcclient, server.grpc_url), (httpclient, f"127.0.0.1:{server.config.http_port}")):
        with module.InferenceServerClient(url) as client:
            plain = client.infer(DEFAULT_NAME, _inputs(Request(texts), module))
            asked = client.infer(DEFAULT_NAME, _inputs(Request(texts, tokens=True), module))
        assert plain.as_numpy("tokens").shape == (2, 0), module.__name__
        assert [[t.decode() for t in row if t] for row in asked.as_numpy("tokens")] == shown, module.__name__
        assert asked.as_numpy("tokens").shape == (2, width)
        assert np.array_equal(plain.as_numpy("embedding"), asked.as_numpy("embedding"))
        assert np.array_equal(plain.as_numpy("token_count"), asked.as_numpy("token_count"))


def test_return_tokens_is_an_optional_input_the_ensemble_passes_on():
    info = ModelInfo(name="m", source="/models/x", dim=8, pooling="mean", layers=(-1,), normalize=False,
                     max_seq_len=16, max_batch_size=8, precision="fp32")
    tokenizer, _, ensemble = (parse(c.render()) for c in model_configs(info))
    for config in (tokenizer, ensemble):
        (flag,) = [t for t in config.input if t.name == contract.RETURN_TOKENS]
        assert flag.optional and flag.data_type == model_config_pb2.TYPE_BOOL and list(flag.dims) == [1]
    (step,) = [s for s in ensemble.ensemble_scheduling.step if s.model_name == tokenizer.name]
    assert step.input_map[contract.RETURN_TOKENS] == contract.RETURN_TOKENS
