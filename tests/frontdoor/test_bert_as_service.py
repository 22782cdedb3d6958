"""bert-as-service's protocol through the unchanged `bert-serving-client==1.10.0` against a real server."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from bert_serving.client import BertClient

from bertserve import Encoder
from bertserve.frontdoor import FrontDoor

from ..conftest import DEFAULT_NAME, TOKENS_NAME
from ..corpus import sentences
from .conftest import door_config, internals

TEXTS = sentences(24)
TIMEOUT_MS = 60_000


def _client(door, **options) -> BertClient:
    port, port_out = door.config.bert_as_service_ports
    return BertClient(ip="127.0.0.1", port=port, port_out=port_out, timeout=TIMEOUT_MS, **options)


@pytest.fixture(scope="module")
def sdk(server):
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as encoder:
        yield encoder


def test_vectors_equal_the_sdks(door, sdk):
    with _client(door) as bc:
        got = bc.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    assert np.abs(got - sdk.encode(TEXTS)).max() <= 1e-5


def test_list_output_and_show_tokens(door, sdk):
    with _client(door, output_fmt="list") as bc:
        vectors, tokens = bc.encode(TEXTS[:3], show_tokens=True)
    want, want_tokens = sdk.encode(TEXTS[:3], show_tokens=True)
    assert isinstance(vectors, list) and np.abs(np.array(vectors) - want).max() <= 1e-5
    assert tokens == want_tokens and tokens[0][0] == "[CLS]" and tokens[0][-1] == "[SEP]"


def test_is_tokenized_and_pairs(door, sdk):
    tokenized = [["hello", "world"], ["the", "cat", "##s", "zzzqqq"]]
    pairs = ["how old are you ||| what is your age", "the cat sat ||| on the mat"]
    with _client(door) as bc:
        got_tokenized, tokens = bc.encode(tokenized, is_tokenized=True, show_tokens=True)
        got_pairs, pair_tokens = bc.encode(pairs, show_tokens=True)
    assert np.abs(got_tokenized - sdk.encode(tokenized, is_tokenized=True)).max() <= 1e-5
    assert tokens[1] == ["[CLS]", "the", "cat", "##s", "[UNK]", "[SEP]"]  # tokens used as given
    assert np.abs(got_pairs - sdk.encode(pairs)).max() <= 1e-5
    assert pair_tokens[0].count("[SEP]") == 2
    assert not np.allclose(got_pairs[0], sdk.encode(["how old are you what is your age"])[0], atol=1e-3)


def test_encode_async_fetch_all_keeps_order(door, sdk):
    batches = [TEXTS[i:i + 4] for i in range(0, len(TEXTS), 4)]
    with _client(door) as bc:
        results = list(bc.encode_async(iter(batches), max_num_batch=len(batches)))
        assert len(results) == len(batches)
        ordered = np.concatenate([r.embedding for r in sorted(results, key=lambda r: r.id)])
        for batch in batches:
            bc.encode(batch, blocking=False)
        fetched = bc.fetch_all(sort=True, concat=True)
    want = sdk.encode(TEXTS)
    assert np.abs(ordered - want).max() <= 1e-5
    assert np.abs(fetched - want).max() <= 1e-5


def test_eight_concurrent_clients(door, sdk):
    want = sdk.encode(TEXTS)
    failures, results = [], {}

    def run(k: int) -> None:
        try:
            with _client(door) as bc:
                for round_ in range(3):
                    mine = TEXTS[k:] + TEXTS[:k]  # a different order per client
                    results[(k, round_)] = (mine, bc.encode(mine))
        except Exception as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures and len(results) == 24
    for (k, _), (mine, got) in results.items():
        assert np.abs(got - np.roll(want, -k, axis=0)).max() <= 1e-5


def _counted(before: dict, after: dict) -> tuple[int, int, int]:
    """(requests, sentences, failed requests) counted between two `server_status` answers."""
    return tuple(after[key] - before[key] for key in ("num_request", "num_sentence", "num_failed_request"))


def test_server_config_and_status(door):
    with _client(door) as bc:  # the client itself checks server_version against its own 1.10.0
        config = bc.server_config
        before = bc.server_status
        bc.encode(TEXTS[:2])
        served = bc.server_status
        with pytest.raises(TypeError, match="bertserve: "):
            bc.encode(["refused ||| "])
        refused = bc.server_status
    assert config["server_version"] == "1.10.0" and config["model"] == DEFAULT_NAME
    assert (config["max_seq_len"], config["pooling_strategy"], config["show_tokens_to_client"]) == (256, "REDUCE_MEAN",
                                                                                                   True)
    assert _counted(before, served) == (1, 2, 0)
    assert _counted(served, refused) == (0, 0, 1)


def test_a_refused_request_raises_in_the_unchanged_client_with_the_reason(door):
    with _client(door) as bc:
        with pytest.raises(TypeError, match="bertserve: second sentence of item 0 is an empty string"):
            bc.encode(["hello ||| "])
        assert bc.encode(["still serving"]).shape == (1, 384)


@pytest.mark.parametrize("text", ["\u200b\u200d", "\x00"], ids=["zero-width", "nul"])
def test_input_the_tokenizer_refuses_names_no_internal_address(door, server, text):
    """Triton refuses them, and its error names the door's own Triton address: the client gets the rest."""
    with _client(door) as bc, pytest.raises(TypeError, match="bertserve: refused the input") as raised:
        bc.encode([text])
    assert not [word for word in internals(server) if word in str(raised.value)], str(raised.value)


@pytest.mark.filterwarnings("ignore:server does not put a restriction on \"max_seq_len\"")  # no model, no length
def test_a_door_serving_several_models_without_a_name_says_so(server):
    """Without a model name the door takes the one served; with several, the unchanged client still connects
    and each encode says what to do."""
    with FrontDoor(door_config(server, openai_port=0, bert_as_service_model=None)) as door, _client(door) as bc:
        assert bc.server_config["model"] is None
        with pytest.raises(TypeError, match=r"bertserve: several models are served \(.*\); start the front door "
                                            "with a model name"):
            bc.encode(["hello"])


def test_the_door_warns_that_the_protocol_has_no_keys(door):
    assert "protocol on ports %d and %d has no keys (its clients encode with the server's API key)" % \
        door.config.bert_as_service_ports in door.logs()


def test_token_level_models_use_the_padded_layout(server):
    with FrontDoor(door_config(server, openai_port=0, bert_as_service_model=TOKENS_NAME)) as door:
        with _client(door) as bc:
            got = bc.encode(["short", "a somewhat longer sentence than that"])
    with Encoder(server.grpc_url, model=TOKENS_NAME) as sdk:
        want = sdk.encode(["short", "a somewhat longer sentence than that"])
    assert got.shape == (2, 64, 384)  # [n, max_seq_len, dim], as bert-as-service's NONE pooling
    for row, vectors in enumerate(want):
        assert np.abs(got[row, : len(vectors)] - vectors).max() <= 1e-5
        assert not got[row, len(vectors):].any()


def test_hostile_messages_get_an_error_or_are_dropped_and_the_door_keeps_serving(door):
    """Raw ZeroMQ, as a careless or hostile client might send: bad JSON, wrong shapes, wrong frame counts, and a
    frame over the size limit (dropped by ZeroMQ before it is buffered)."""
    import json

    import zmq

    port, port_out = door.config.bert_as_service_ports
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PUSH), context.socket(zmq.SUB)
    for socket in (sender, receiver):
        socket.setsockopt(zmq.LINGER, 0)
    receiver.setsockopt(zmq.SUBSCRIBE, b"hostile")
    receiver.setsockopt(zmq.RCVTIMEO, 30_000)
    sender.connect(f"tcp://127.0.0.1:{port}")
    receiver.connect(f"tcp://127.0.0.1:{port_out}")
    try:
        sender.send_multipart([b"hostile", b"x" * 64, b"1", b"0", b"extra"])  # five frames: dropped
        sender.send_multipart([b"hostile", b"y" * (door.config.max_request_bytes + 1), b"2", b"1"])  # over the limit
        for request_id, body in enumerate([b"not json", b"{}", b"[]", b"[1, 2]", b'[""]', b"[[]]"], start=3):
            sender.send_multipart([b"hostile", body, str(request_id).encode(), b"1"])
            identity, header, data, answered = receiver.recv_multipart()
            assert (identity, answered, data) == (b"hostile", str(request_id).encode(), b"")
            assert json.loads(header)["dtype"].startswith("bertserve: "), body
    finally:
        sender.close()
        receiver.close()
        context.term()
    with _client(door) as bc:
        assert bc.encode(["still serving"]).shape == (1, 384)
