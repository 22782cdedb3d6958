"""What bert-as-service users relied on, against a real server: pairs, tokens, token vectors, options, status."""

from __future__ import annotations

import asyncio
import threading
import warnings

import numpy as np
import pytest

from bertserve import Encoder, TruncationWarning
from bertserve.errors import InvalidInputError

from ..conftest import DEFAULT_NAME, STREAM_NAME, TOKENS_NAME, settled, steady
from ..corpus import sentences


@pytest.fixture(scope="module")
def hf(minilm_dir):
    from transformers import AutoTokenizer, BertModel

    return AutoTokenizer.from_pretrained(str(minilm_dir)), BertModel.from_pretrained(str(minilm_dir)).eval()


@pytest.fixture(scope="module", params=["grpc", "http"])
def encoder(request, server):
    url = server.grpc_url if request.param == "grpc" else server.http_url
    with Encoder(url, protocol=request.param, model=DEFAULT_NAME) as enc:
        yield enc


def _reference(hf, batch, max_length=256):
    """Mean pooling + L2 norm over transformers' last hidden state: what all-MiniLM-L6-v2 computes."""
    import torch

    tokenizer, model = hf
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


PAIRS = [
    ("How old are you?", "What is your age?"),
    ("The cat sat on the mat.", "短い文 🙂"),
    ("word " * 300, "a short second sentence"),  # longest_first truncation cuts the long side only
    ("a short first sentence", "token " * 400),
]


def test_pairs_match_the_hugging_face_pair_encoding(encoder, hf):
    tokenizer, _ = hf
    legacy = [f"{a} ||| {b}" for a, b in PAIRS]
    vectors, tokens = encoder.encode(PAIRS, show_tokens=True)
    legacy_vectors = encoder.encode(legacy)
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, truncation="longest_first",
                      max_length=256, return_tensors="pt")
    want_tokens = [tokenizer.convert_ids_to_tokens(ids[mask.bool()]) for ids, mask in
                   zip(batch["input_ids"], batch["attention_mask"])]
    assert tokens == want_tokens
    assert len(tokens[2]) == 256 and tokens[2][-6:] == ["[SEP]", "a", "short", "second", "sentence", "[SEP]"]
    want = _reference(hf, batch)  # also checks segment ids: token_type_ids 0/1 come from the HF encoding
    assert np.abs(vectors - want).max() <= 1e-4
    assert np.array_equal(vectors, legacy_vectors)


def test_legacy_separator_splits_at_the_last_one(encoder):
    _, tokens = encoder.encode(["a ||| b ||| c"], show_tokens=True)
    assert tokens == [["[CLS]", "a", "|", "|", "|", "b", "[SEP]", "c", "[SEP]"]]


def test_pre_tokenized_input_is_not_re_split_and_unknowns_become_unk(encoder, hf):
    import torch

    tokenizer, _ = hf
    given = [["hello", "unaffable", "world"], ["the", "cat", "##s"], ["完全", "是"]]
    vectors, tokens = encoder.encode(given, is_tokenized=True, show_tokens=True)
    vocab = tokenizer.get_vocab()
    want_tokens = [["[CLS]"] + [t if t in vocab else "[UNK]" for t in row] + ["[SEP]"] for row in given]
    assert tokens == want_tokens
    assert tokens[0][2] == "[UNK]" and tokens[1][3] == "##s"
    ids = [tokenizer.convert_tokens_to_ids(row) for row in want_tokens]
    width = max(map(len, ids))
    batch = {
        "input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
        "token_type_ids": torch.zeros(len(ids), width, dtype=torch.long),
    }
    assert np.abs(vectors - _reference(hf, batch)).max() <= 1e-4


def test_show_tokens_equals_the_hugging_face_tokens(encoder, hf):
    tokenizer, _ = hf
    texts = sentences(100)
    _, tokens = encoder.encode(texts, show_tokens=True)
    want = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    assert tokens == want


def test_token_vectors_equal_the_reference_per_token(server, hf):
    import torch

    tokenizer, model = hf
    texts = ["short", "a somewhat longer sentence here", "word " * 200]
    with Encoder(server.grpc_url, model=TOKENS_NAME) as enc:
        vectors = enc.encode(texts)
        block, mask = enc.encode(texts, padded=True)
        normalized = enc.encode(texts[:1], normalize=True)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    lengths = batch["attention_mask"].sum(1).tolist()
    assert [v.shape for v in vectors] == [(n, 384) for n in lengths]
    for v, h, n in zip(vectors, hidden, lengths):
        assert np.abs(v - h[:n]).max() <= 1e-4
    assert block.shape == (3, 64, 384) and mask.tolist() == batch["attention_mask"].tolist()
    assert np.abs(block[mask == 0]).max() == 0
    assert np.allclose(np.linalg.norm(normalized[0], axis=1), 1.0, atol=1e-5)


def test_truncation_warns_by_default_and_refuses_when_asked(encoder):
    long_text = "word " * 300
    with pytest.warns(TruncationWarning, match="item 1, 302 tokens"):
        encoder.encode(["short", long_text])
    with pytest.raises(InvalidInputError, match="item 1, 302 tokens.*truncate=True"):
        encoder.encode(["short", long_text], truncate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["short", "word " * 254])  # 256 tokens with [CLS]/[SEP]: fits exactly


def test_output_list(server):
    with Encoder(server.grpc_url, model=TOKENS_NAME) as tokens_enc, Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        as_list = enc.encode(["hello", "world"], output="list")
        assert isinstance(as_list, list) and len(as_list) == 2 and isinstance(as_list[0][0], float)
        assert np.allclose(np.array(as_list), enc.encode(["hello", "world"]))
        token_lists = tokens_enc.encode(["hello"], output="list")
        assert isinstance(token_lists[0], list) and len(token_lists[0]) == 3


def test_client_side_normalisation(server):
    texts = sentences(20)
    with Encoder(server.grpc_url, model=STREAM_NAME) as enc:  # a model that does not normalise in its graph
        raw = enc.encode(texts)
        unit = enc.encode(texts, normalize=True)
        unit_list = enc.encode(texts, normalize=True, output="list")
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.abs(norms - 1).min() > 0.01, "the raw vectors are already unit length; this would prove nothing"
    assert np.abs(unit - raw / norms).max() <= 1e-6
    assert np.abs(np.array(unit_list) - unit).max() <= 1e-6


@pytest.mark.parametrize(
    "texts, options, message",
    [
        ([("only one",)], {}, "pair has exactly 2 sentences"),
        ([("first", "")], {}, "second sentence of item 0 is an empty string"),
        (["first |||  "], {}, "second sentence of item 0 is an empty string"),
        (["hello world"], {"is_tokenized": True}, "list of token strings"),
        ([["hello", ""]], {"is_tokenized": True}, "non-empty token strings"),
        (["x"], {"output": "json"}, "output must be"),
        (["x"], {"padded": True}, "padded=True is for token-level models"),
    ],
)
def test_bad_options_and_items_are_named(encoder, texts, options, message):
    with pytest.raises(InvalidInputError, match=message):
        encoder.encode(texts, **options)


def test_sixteen_threads_share_one_encoder(server):
    texts = sentences(16 * 12)
    with Encoder(server.grpc_url, model=STREAM_NAME) as reference:  # a one-layer model: the client is under test
        want = reference.encode(texts)
    results: dict[tuple[int, int], np.ndarray] = {}
    errors = []
    with Encoder(server.http_url, model=STREAM_NAME) as shared:
        def work(t: int) -> None:
            try:
                mine = texts[t * 12 : (t + 1) * 12]
                for round_ in range(3):  # each thread calls repeatedly, interleaving with the others
                    if round_ % 2:  # a reversed call must come back reversed, not in some other thread's order
                        results[t, round_] = shared.encode(mine[::-1])[::-1]
                    else:
                        results[t, round_] = shared.encode(mine)
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        status = shared.status()
    assert not errors
    assert sorted(results) == [(t, r) for t in range(16) for r in range(3)]
    for round_ in range(3):
        got = np.concatenate([results[t, round_] for t in range(16)])
        assert np.abs(got - want).max() <= 1e-5, f"round {round_} came back wrong"
    assert status.requests == 16 * 3 and status.sentences == 16 * 3 * 12 and status.failures == 0


def test_async_encode_matches_encode(encoder):
    texts = sentences(20)

    async def main():
        return await asyncio.gather(encoder.aencode(texts[:10]), encoder.aencode(texts[10:], output="list"))

    first, second = asyncio.run(main())
    assert np.abs(np.concatenate([first, np.array(second)]) - encoder.encode(texts)).max() <= 1e-5


def test_stream_keeps_order_and_shows_progress_when_asked(server, capsys):
    texts = sentences(300)
    with Encoder(server.grpc_url, model=STREAM_NAME, batch_size=16) as enc:
        streamed = np.stack(list(enc.encode_stream(iter(texts), max_in_flight=3, progress=True)))
        assert np.abs(streamed - enc.encode(texts)).max() <= 1e-5
    assert "encoding: 300sent" in capsys.readouterr().err


def _figures(status, name):
    (model,) = [m for m in status.models if m.name == name]
    return model.requests, model.inferences, model.executions, model.failures


def test_server_and_client_status(server, encoder):
    names = [DEFAULT_NAME, f"{DEFAULT_NAME}_tokenizer", f"{DEFAULT_NAME}_encoder"]
    before = steady(encoder.server_status)
    client_before = encoder.status()
    encoder.encode(["count me", "and me", "and me too"])
    client = encoder.status()
    # Triton counts a batch's inferences and executions after its requests: wait for all three.
    after = settled(encoder.server_status, lambda status: all(
        now - then >= least for name in names
        for now, then, least in zip(_figures(status, name), _figures(before, name), (1, 3, 1))))

    assert after.version == "2.51.0" and "Triton 2.51.0" in after.table()
    models = {m.name: m for m in after.models}
    assert {*names, STREAM_NAME, TOKENS_NAME} <= set(models) and all(models[n].ready for n in names)
    for name in names:  # one request of 3 sentences, run once, through each model of the ensemble
        got = [a - b for a, b in zip(_figures(after, name), _figures(before, name))]
        assert got == [1, 3, 1, 0], name
    assert models[f"{DEFAULT_NAME}_encoder"].compute_ms > 0
    assert (client.requests - client_before.requests, client.sentences - client_before.sentences,
            client.failures - client_before.failures) == (1, 3, 0)
    assert client.seconds > client_before.seconds
