"""Triton Python backend: token ids -> embeddings, with ONNX Runtime on the exported graph.

Requests arrive ragged (each padded to its own longest sentence); they are
padded together to the longest in the batch, run as one ONNX Runtime call and
split back. Padding never changes a result: the graph pools over the mask.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        providers = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                device = {"device_id": int(args["model_instance_device_id"])}
                providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
            else:
                pb_utils.Logger.log_warn(
                    "GPU instance but onnxruntime has no CUDA provider; running on CPU (install onnxruntime-gpu)"
                )
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.token_level = len(config["output"][0]["dims"]) == 2
        pb_utils.Logger.log_info(f"encoder running on {self.session.get_providers()[0]}")

    def execute(self, requests):
        per_request = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS}
            for request in requests
        ]
        width = max(arrays["input_ids"].shape[1] for arrays in per_request)
        feeds = {
            name: np.concatenate(
                [np.pad(arrays[name], ((0, 0), (0, width - arrays[name].shape[1]))) for arrays in per_request]
            )
            for name in INPUTS
        }
        embedding = self.session.run(["embedding"], feeds)[0]
        responses, start = [], 0
        for arrays in per_request:
            rows, length = arrays["input_ids"].shape
            block = embedding[start : start + rows]
            if self.token_level:
                block = block[:, :length]
            start += rows
            tensor = pb_utils.Tensor("embedding", np.ascontiguousarray(block, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
