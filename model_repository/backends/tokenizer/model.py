"""Triton Python backend: UTF-8 strings -> WordPiece ids, attention mask and segment ids.

All requests of a batch are tokenised in one fast-tokenizer call; each request
gets its rows back, padded only to its own longest sentence. A request with bad
text gets an error response that names the item; the others in the batch are
served normally.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _decode(raw, index):
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"input item {index} is not valid UTF-8 ({exc.reason} at byte {exc.start}); send text encoded as UTF-8"
        ) from None
    if not text.strip():
        raise ValueError(f"input item {index} is an empty string; send non-empty text")
    return text


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))

    def execute(self, requests):
        texts, problems = [], {}
        for r, request in enumerate(requests):
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            try:
                texts.append([_decode(item, i) for i, item in enumerate(raw)])
            except ValueError as exc:
                problems[r] = str(exc)
                texts.append([])

        encodings = self.tokenizer.encode_batch([t for request_texts in texts for t in request_texts])
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        responses, start = [], 0
        for r, request_texts in enumerate(texts):
            if r in problems:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(problems[r])))
                continue
            rows = slice(start, start + len(request_texts))
            start += len(request_texts)
            width = int(arrays["attention_mask"][rows].sum(axis=1).max())
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(arrays[name][rows, :width])) for name in OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
