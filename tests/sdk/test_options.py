"""Encode's per-request options through the SDK against a real tritonserver: truncation side, prompts, long inputs
encoded whole in windows, and compact vectors, each checked against an in-process reference, with its bad values
refused (before any request where the SDK can tell)."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import pytest

from bertserve import Encoder, TruncationWarning, contract
from bertserve.errors import InvalidInputError
from bertserve.quantize import quantize

from ..conftest import DEFAULT_NAME, DEFAULT_PROMPT_NAME, PROMPTS, PROMPTS_NAME, STREAM_NAME, TOKENS_NAME
from ..corpus import sentences

CORPUS = sentences(300)
MAX_SEQ_LEN = 256  # the default model's
ROOM = MAX_SEQ_LEN - 2  # text tokens a sequence holds besides [CLS] and [SEP]
SHORT = CORPUS[:6]


@pytest.fixture(scope="module")
def encoder(server):
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        yield enc


@pytest.fixture(scope="module")
def tokenizer(repository):
    """The default model's served tokenizer, counting whole texts (no truncation)."""
    from tokenizers import Tokenizer

    counter = Tokenizer.from_file(str(repository / f"{DEFAULT_NAME}_tokenizer" / "1" / "tokenizer.json"))
    counter.no_truncation()
    counter.no_padding()
    return counter


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def prompted(prompts_dir):
    """sentence-transformers on the folder whose configuration carries prompts."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompts_dir), device="cpu")


def _tokens(tokenizer, text: str) -> int:
    """Text tokens of `text`, [CLS] and [SEP] left out."""
    return len(tokenizer.encode(text).ids) - 2


def _long(tokenizer, tokens: int, start: int = 0) -> str:
    """Corpus sentences from `start` on, joined until they pass `tokens` text tokens."""
    parts: list[str] = []
    for sentence in CORPUS[start:] + CORPUS[:start]:
        parts.append(sentence)
        if _tokens(tokenizer, " ".join(parts)) > tokens:
            return " ".join(parts)
    raise AssertionError(f"the corpus holds fewer than {tokens} tokens")


def _exactly(tokenizer, tokens: int, start: int) -> str:
    """A text of exactly `tokens` text tokens: corpus sentences from `start` on, then single-token words."""
    text = CORPUS[start]
    for sentence in CORPUS[start + 1:]:
        if _tokens(tokenizer, f"{text} {sentence}") > tokens:
            break
        text = f"{text} {sentence}"
    return text + " a" * (tokens - _tokens(tokenizer, text))


def _sent(encoder: Encoder) -> tuple[int, int]:
    """Requests the encoder has sent: answered, and refused."""
    status = encoder.status()
    return status.requests, status.failures


def _unsent(encoder: Encoder, call: Any) -> InvalidInputError:
    """The InvalidInputError `call()` raises, checking that it sent no request."""
    before = _sent(encoder)
    with pytest.raises(InvalidInputError) as caught:
        call()
    assert _sent(encoder) == before, "refused after sending a request"
    return caught.value


# -- truncation side ---------------------------------------------------------------------------------------------------


def test_left_truncation_keeps_the_end_of_the_text(encoder, tokenizer):
    # The tail: exactly ROOM tokens, after a head that puts the whole text past max_seq_len. Left truncation must
    # leave exactly the tail.
    tail = _exactly(tokenizer, ROOM, start=40)
    assert _tokens(tokenizer, tail) == ROOM
    text = _long(tokenizer, 100, start=10) + " " + tail
    alone = encoder.encode([tail])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        left = encoder.encode([text], truncation_direction="left")
        right = encoder.encode([text], truncation_direction="right")
    assert np.abs(left - alone).max() <= 1e-5
    assert np.abs(right - alone).max() > 1e-2  # the right side's cut is another text
    messages = [str(w.message) for w in caught if w.category is TruncationWarning]
    assert len(messages) == 2 and "truncated on the left" in messages[0] and "truncated on the right" in messages[1]
    detailed = encoder.encode_detailed([text, SHORT[0]], truncation_direction="left")
    assert detailed.truncated.tolist() == [True, False]
    assert detailed.token_counts[0] == _tokens(tokenizer, text) + 2
    with pytest.raises(InvalidInputError, match="item 0.*on the left"):
        encoder.encode([text], truncation_direction="left", truncate=False)


def test_a_bad_truncation_direction_is_named(encoder):
    error = _unsent(encoder, lambda: encoder.encode(SHORT, truncation_direction="middle"))
    assert "truncation_direction 'middle'" in str(error) and "'left'" in str(error)


# -- prompts -----------------------------------------------------------------------------------------------------------


def test_a_prompt_is_put_before_each_text(encoder):
    prompted = encoder.encode(SHORT, prompt="query: ")
    assert np.abs(prompted - encoder.encode(["query: " + text for text in SHORT])).max() <= 1e-5
    assert np.abs(prompted - encoder.encode(SHORT)).max() > 1e-2
    assert np.abs(encoder.encode(SHORT, prompt="") - encoder.encode(SHORT)).max() <= 1e-5  # "": no prompt


@pytest.mark.parametrize("options, reference", [
    ({}, {}),  # the model's default prompt
    (dict(prompt_name="query"), dict(prompt_name="query")),
    (dict(prompt_name="passage"), dict(prompt_name="passage")),
    (dict(prompt_name=""), {}),  # "": the default
    (dict(prompt=""), dict(prompt="")),  # "": none
    (dict(prompt="search: "), dict(prompt="search: ")),
])
def test_prompts_match_sentence_transformers(server, prompted, options, reference):
    texts = CORPUS[:16]  # some pass max_seq_len once prompted: the prompt counts in truncation as in pooling
    with Encoder(server.grpc_url, model=PROMPTS_NAME) as enc, warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        info = enc.info()
        vectors = enc.encode(texts, **options)
        unprompted = enc.encode(texts, prompt="")
    assert (dict(info.prompts), info.default_prompt_name) == (PROMPTS, DEFAULT_PROMPT_NAME)
    want = prompted.encode(texts, convert_to_numpy=True, **reference)
    assert np.abs(vectors - want).max() <= 1e-4
    if options != dict(prompt=""):
        assert np.abs(vectors - unprompted).max() > 1e-3  # a prompt was applied


def test_an_unknown_prompt_name_is_the_servers_refusal_naming_it(encoder):
    with pytest.raises(InvalidInputError, match="names the prompt 'query', which this model does not have"):
        encoder.encode(SHORT, prompt_name="query")


@pytest.mark.parametrize("name", [contract.PROMPT, contract.PROMPT_NAME])
def test_a_prompt_past_its_bound_is_refused_before_any_request(encoder, name):
    error = _unsent(encoder, lambda: encoder.encode(SHORT, **{name: "p" * (contract.MAX_PROMPT_CHARS + 1)}))
    assert f"{name} is {contract.MAX_PROMPT_CHARS + 1:,} characters, over the {contract.MAX_PROMPT_CHARS:,}" in str(error)
    assert len(encoder.encode(SHORT[:1], prompt="p " * (contract.MAX_PROMPT_CHARS // 2))) == 1  # at the bound: sent


def test_a_prompt_and_a_prompt_name_together_are_refused(encoder):
    error = _unsent(encoder, lambda: encoder.encode(SHORT, prompt_name="query", prompt="query: "))
    assert "prompt_name='query' and prompt='query: ' both given" in str(error)
    _unsent(encoder, lambda: encoder.encode([["hello", "world"]], is_tokenized=True, prompt="query: "))


# -- long inputs -------------------------------------------------------------------------------------------------------


def _windows_reference(minilm, tokenizer, text: str) -> np.ndarray:
    """sentence-transformers' vectors of the windows of `text` (ROOM tokens each, between [CLS] and [SEP]), averaged
    weighted by their tokens and normalised: what long_input="chunk" promises, computed in process."""
    import torch

    ids = tokenizer.encode(text).ids
    body, cls, sep = ids[1:-1], ids[0], ids[-1]
    windows = [body[start : start + ROOM] for start in range(0, len(body), ROOM)]
    vectors = []
    with torch.no_grad():
        for window in windows:
            input_ids = torch.tensor([[cls] + window + [sep]])
            features = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                        "token_type_ids": torch.zeros_like(input_ids)}
            vectors.append(minilm(features)["sentence_embedding"][0].numpy())
    weights = np.array([len(w) for w in windows], np.float64)
    mean = (np.array(vectors) * weights[:, None]).sum(0) / weights.sum()
    return mean / np.linalg.norm(mean)


def test_chunk_encodes_a_long_text_whole_as_the_weighted_mean_of_its_windows(encoder, tokenizer, minilm):
    text = _long(tokenizer, 2 * ROOM + 60)  # three windows, the last one short
    count = _tokens(tokenizer, text)
    assert 2 * ROOM < count < 3 * ROOM
    items = [SHORT[0], text, SHORT[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)  # nothing is cut
        detailed = encoder.encode_detailed(items, long_input="chunk")
        vectors = encoder.encode(items, long_input="chunk")
    want = _windows_reference(minilm, tokenizer, text)
    assert np.abs(vectors[1] - want).max() <= 1e-4
    assert np.abs(detailed.vectors - vectors).max() <= 1e-6
    with pytest.warns(TruncationWarning):
        plain = encoder.encode(items)
    assert np.abs(plain[1] - want).max() > 1e-2  # the first window alone is another vector
    assert np.abs(vectors[[0, 2]] - plain[[0, 2]]).max() <= 1e-5  # short items as without chunk
    assert detailed.truncated.tolist() == [False, False, False]
    assert detailed.token_counts[1] == count + 2
    # Every window was run, with its own [CLS] and [SEP].
    assert detailed.tokens_seen == detailed.token_counts[[0, 2]].sum() + count + 3 * 2


def test_chunk_streams_with_every_worker_busy(server, encoder, tokenizer):
    # One worker, requests of 2: the stream's request runs on the pool's only thread and its windows take two
    # requests, which must not wait for that same pool.
    items = [SHORT[0], _long(tokenizer, 2 * ROOM + 60), SHORT[1]]
    want = encoder.encode(items, long_input="chunk")
    got: list = []
    enc = Encoder(server.grpc_url, model=DEFAULT_NAME, batch_size=2, concurrency=1)
    streaming = threading.Thread(target=lambda: got.extend(enc.encode_stream(items, long_input="chunk")), daemon=True)
    streaming.start()
    streaming.join(timeout=120)  # a hang guard: it takes seconds
    try:
        assert not streaming.is_alive(), "encode_stream waits on its own pool"
    finally:
        if streaming.is_alive():  # let it go: cancel the requests it waits for, or closing would wait for it
            enc._pool.shutdown(wait=False, cancel_futures=True)
        enc.close()
    assert np.abs(np.array(got) - want).max() <= 1e-5


def test_long_input_error_refuses_over_long_text(encoder, tokenizer):
    text = _long(tokenizer, ROOM + 10)
    with pytest.raises(InvalidInputError, match="item 1.*long_input='chunk'"):
        encoder.encode([SHORT[0], text], long_input="error")
    with pytest.raises(InvalidInputError, match="item 1"):
        encoder.encode_detailed([SHORT[0], text], long_input="error")


def test_chunk_past_max_windows_is_refused_naming_the_limit(encoder, tokenizer):
    text = _long(tokenizer, 2 * ROOM + 60)
    with pytest.raises(InvalidInputError, match=r"more than 2 windows.*past the bound of 2 \(max_windows\)"):
        encoder.encode([text], long_input="chunk", max_windows=2)
    # Counted over the whole call: two texts of three windows each pass 5.
    with pytest.raises(InvalidInputError, match="more than 5 windows"):
        encoder.encode([text, text], long_input="chunk", max_windows=5)


def test_chunk_refuses_text_past_the_character_budget(encoder):
    huge = "word " * (contract.char_budget(MAX_SEQ_LEN) // 5 + 10)  # past the budget: its tokens are not counted
    with pytest.raises(InvalidInputError, match="item 0 is longer than the 25,600 characters.*too long to encode in"):
        encoder.encode([huge], long_input="chunk")


@pytest.mark.parametrize("options, named", [
    (dict(long_input="whole"), "long_input 'whole'"),
    (dict(long_input="chunk", truncate=False), "truncate=False refuses"),
    (dict(long_input="chunk", max_windows=0), "max_windows must be"),
    (dict(long_input="chunk", show_tokens=True), "show_tokens"),
])
def test_bad_long_input_options_are_refused_before_any_request(encoder, options, named):
    assert named in str(_unsent(encoder, lambda: encoder.encode(SHORT, **options)))


def test_chunk_is_for_pooled_models(server):
    with Encoder(server.grpc_url, model=TOKENS_NAME) as enc:
        error = _unsent(enc, lambda: enc.encode(SHORT, long_input="chunk"))
    assert "token-level" in str(error)


# -- compact vectors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["binary", "ubinary"])
def test_binary_vectors_equal_quantize_embeddings(encoder, dtype):
    from sentence_transformers.util.quantization import quantize_embeddings

    floats = encoder.encode(CORPUS[:20])
    packed = encoder.encode(CORPUS[:20], output_dtype=dtype)
    want = quantize_embeddings(floats, precision=dtype)
    assert packed.dtype == want.dtype and packed.shape == want.shape == (20, 384 // 8)
    np.testing.assert_array_equal(packed, want)
    np.testing.assert_array_equal(np.array(list(encoder.encode_stream(CORPUS[:20], output_dtype=dtype))), want)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_calibrated_vectors_are_reproducible_and_use_the_models_ranges(encoder, dtype):
    ranges = encoder.info().quantization_ranges
    assert len(ranges) == 2 and len(ranges[0]) == 384, "the export recorded no calibration ranges"
    texts = CORPUS[40:60]
    floats = encoder.encode(texts)
    codes = encoder.encode(texts, output_dtype=dtype)
    assert codes.dtype == np.dtype(dtype) and codes.shape == (20, 384)
    np.testing.assert_array_equal(codes, quantize(floats, dtype, ranges))
    # The same text gets the same codes alone as among others: the ranges are the model's, not the batch's. (Its
    # floats may differ in the last bits alone, and a value on the edge of a step then moves by one code.)
    for i in (0, 7):
        alone = encoder.encode([texts[i]])[0]
        coded = encoder.encode([texts[i]], output_dtype=dtype)[0]
        np.testing.assert_array_equal(coded, quantize(alone, dtype, ranges))
        moved = coded.astype(np.int64) - codes[i]
        assert np.abs(moved).max() <= 1 and not (moved != 0)[alone == floats[i]].any()
    assert len(np.unique(codes)) > 64  # spread over the range, not clipped to its ends


def test_calibrated_vectors_are_quantized_after_normalize(server):
    with Encoder(server.grpc_url, model=STREAM_NAME) as enc:  # a model that does not normalise
        ranges = enc.info().quantization_ranges
        floats = enc.encode(SHORT)
        codes = enc.encode(SHORT, normalize=True, output_dtype="int8")
    unit = floats / np.linalg.norm(floats, axis=1, keepdims=True)
    np.testing.assert_array_equal(codes, quantize(unit, "int8", ranges))
    assert not np.array_equal(codes, quantize(floats, "int8", ranges))


def test_token_level_vectors_are_packed_token_by_token(server):
    with Encoder(server.grpc_url, model=TOKENS_NAME) as enc:
        floats = enc.encode(SHORT[:2])
        packed = enc.encode(SHORT[:2], output_dtype="ubinary")
        assert [p.shape for p in packed] == [(len(f), 384 // 8) for f in floats]
        for f, p in zip(floats, packed):
            np.testing.assert_array_equal(p, np.packbits(f > 0, axis=-1))
        error = _unsent(enc, lambda: enc.encode(SHORT, output_dtype="int8"))
    assert "output_dtype 'int8' needs the ranges calibrated at export" in str(error)


def test_an_unknown_dtype_is_named(encoder):
    error = _unsent(encoder, lambda: encoder.encode(SHORT, output_dtype="float16"))
    assert "output_dtype 'float16' is not one of" in str(error)
