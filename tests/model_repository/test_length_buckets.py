"""Length buckets against a real server: the tokenizer of a native-backend export pads each request to a bucket,
and pooling over the bucket-padded rows equals pooling over each sentence alone."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer

from bertserve.model_repository.deployment import Backend, Deployment
from bertserve.model_repository.repository import TOKEN_TENSORS, component_names
from bertserve.server import TritonServer

from ..conftest import server_config

MAX_SEQ_LEN = 128  # buckets 16, 32, 64 and 128
# Requests, the tokens their longest item needs and the width they are padded to, counted by hand in the tiny BERT's
# vocabulary (`tiny_bert_dir`, trained on the test corpus): "the" is one token, "hi" two (h ##i), and each sentence
# adds [CLS] and [SEP]. Each lands in another bucket, three of them on a bucket's edge (16, 17, 33).
REQUESTS = [
    (["hi"], 4, 16),
    (["short one", " ".join(["the"] * 14)], 16, 16),
    ([" ".join(["the"] * 15), "tiny"], 17, 32),
    ([" ".join(["the"] * 31), "two words"], 33, 64),
    ([" ".join(["long"] * 300)], 128, 128),  # truncated
]


@pytest.fixture(scope="module")
def native_export(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT exported for Triton's native onnxruntime backend, and a server of its tokenizer alone
    (the embedded server has no native onnxruntime backend to run the encoder)."""
    from bertserve.export import ExportConfig, export_model

    export_repo = tmp_path_factory.mktemp("native") / "repository"
    export_model(ExportConfig(model_dir=tiny_bert_dir, repository=export_repo, name="native", max_seq_len=MAX_SEQ_LEN,
                              deployment=Deployment(Backend.ONNXRUNTIME)))
    tokenizer_name, encoder_name = component_names("native")
    served = tmp_path_factory.mktemp("tokenizer-only") / "repository"
    shutil.copytree(export_repo / tokenizer_name, served / tokenizer_name)
    with TritonServer(server_config(served)) as triton:
        yield triton, export_repo / tokenizer_name / "1" / "tokenizer.json", export_repo / encoder_name / "1" / "model.onnx"


def _tokenize(triton, texts):
    with grpcclient.InferenceServerClient(triton.grpc_url.split("://")[-1]) as client:
        text = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        result = client.infer("native_tokenizer", [text], client_timeout=30)
    return {name: result.as_numpy(name) for name in TOKEN_TENSORS}


@pytest.mark.parametrize(("texts", "tokens", "width"), REQUESTS, ids=[f"{t} in {w}" for _, t, w in REQUESTS])
def test_each_request_is_padded_to_its_bucket(native_export, texts, tokens, width):
    triton, tokenizer_file, _ = native_export
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    alone = [tokenizer.encode(t) for t in texts]
    longest = max(len(e.ids) for e in alone)
    assert longest == tokens, "the vocabulary no longer splits these words as counted"
    batch = _tokenize(triton, texts)
    assert batch["input_ids"].shape == (len(texts), width)
    for row, encoding in enumerate(alone):
        n = len(encoding.ids)
        assert batch["input_ids"][row].tolist() == encoding.ids + [0] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["token_type_ids"][row].tolist() == [0] * width


def test_pooling_over_bucket_padding_equals_each_sentence_alone(native_export):
    triton, _, encoder_file = native_export
    session = ort.InferenceSession(str(encoder_file))
    texts = REQUESTS[2][0] + REQUESTS[3][0]
    batch = _tokenize(triton, texts)
    assert batch["input_ids"].shape[1] == 64  # 3 to 33 real tokens padded to the 64 bucket
    padded = session.run(["embedding"], batch)[0]
    for row, text in enumerate(texts):
        n = int(batch["attention_mask"][row].sum())
        unpadded = session.run(["embedding"], {name: batch[name][row:row + 1, :n] for name in TOKEN_TENSORS})[0][0]
        assert np.abs(padded[row] - unpadded).max() <= 1e-5
