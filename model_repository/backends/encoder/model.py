"""Triton Python backend: token ids -> embeddings, with ONNX Runtime (model.onnx), OpenVINO (model.xml) or
PyTorch (model.pt, TorchScript) on the exported graph, as the model's `runtime` parameter says.

Requests arrive ragged (each padded to its own longest sentence). All their
rows are sorted by real length and run in groups whose padding stays within
`max_padding_ratio` computed tokens per real token, so short sentences batched
with long ones are not padded to the longest. Results go back to each request
in its own order. Padding never changes a result: the graph pools over the mask.

Two counters on Triton's metrics endpoint show the effect:
bertserve_encoder_tokens_total{kind="real"|"computed"}.
"""

import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from bertserve import contract
from bertserve.model_repository.backends.failures import answer_failure

INPUTS = contract.TOKEN_TENSORS


def length_groups(lengths, max_ratio):
    """Split row indices, sorted by length, into groups padded to at most `max_ratio` x their real tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, current, real = [], [], 0
    for i in order:
        # Ascending order: the newest row sets the group's width.
        if current and lengths[i] * (len(current) + 1) > max_ratio * (real + lengths[i]):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        groups.append(current)
    return groups


def cpu_threads():
    """Threads for one instance's forward pass on the CPU: every core. Split among the instances, a lone batch
    would run on part of the machine (measured on a 2-core AMD EPYC, avx2 fma, 2 instances: batch 64 at 191
    sentences/s split, 262 on every core); where both instances are busy they share the cores (ONNX Runtime's threads do not spin)."""
    return len(os.sched_getaffinity(0))


class _OnnxRuntime:
    """ONNX Runtime: the CPU, or the instance's GPU with onnxruntime-gpu."""

    def __init__(self, version_dir, args, config, params):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cpu_threads()
        # Spinning threads wait for work by burning their core: two busy instances would starve each other
        # (measured on the same 2-core EPYC, 16 single-sentence clients: 146 sentences/s spinning, 220 not).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                device = {"device_id": int(args["model_instance_device_id"])}
                providers = [("CUDAExecutionProvider", device), "CPUExecutionProvider"]
            else:
                pb_utils.Logger.log_warn(
                    "GPU instance but onnxruntime has no CUDA provider; running on CPU (install onnxruntime-gpu)"
                )
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"), options, providers=providers)
        self.device = self.session.get_providers()[0]

    def run(self, batches):
        return [self.session.run([contract.EMBEDDING], feeds)[0] for feeds in batches]


class _OpenVinoRuntime:
    """OpenVINO on the CPU. With the throughput hint each batch is split over the compiled model's streams
    (one per core, each with its own thread), which run at once; with the latency hint one stream uses every core."""

    def __init__(self, version_dir, args, config, params):
        import openvino as ov

        from bertserve.model_repository.backends.openvino import compile_encoder

        if args["model_instance_kind"] == "GPU":
            pb_utils.Logger.log_warn("GPU instance but the openvino runtime runs on the CPU")
        params = contract.parameters(config, contract.INFERENCE_PRECISION, contract.PERFORMANCE_HINT)
        compiled = compile_encoder(
            version_dir / "model.xml",
            params[contract.INFERENCE_PRECISION],
            params[contract.PERFORMANCE_HINT],
            cpu_threads(),
        )
        self.streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = ov.AsyncInferQueue(compiled, self.streams)
        self.queue.set_callback(self._finished)
        self.results = {}
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.device = f"CPU (OpenVINO, {precision}, {self.streams} stream{'s' * (self.streams > 1)})"

    def _finished(self, request, key):
        self.results[key] = request.get_output_tensor(0).data.copy()

    def run(self, batches):
        self.results = {}
        for b, feeds in enumerate(batches):
            rows = len(feeds[contract.INPUT_IDS])
            bounds = np.linspace(0, rows, min(self.streams, rows) + 1).astype(int)
            for part, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
                self.queue.start_async({name: value[start:end] for name, value in feeds.items()}, (b, part))
        self.queue.wait_all()
        parts = sorted(self.results)
        return [np.concatenate([self.results[key] for key in parts if key[0] == b]) for b in range(len(batches))]


class _TorchRuntime:
    """PyTorch on TorchScript: the instance's GPU, else the CPU."""

    def __init__(self, version_dir, args, config, params):
        import torch

        self.torch = torch
        device = "cpu"
        if args["model_instance_kind"] == "GPU":
            if torch.cuda.is_available():
                device = f"cuda:{args['model_instance_device_id']}"
            else:
                pb_utils.Logger.log_warn("GPU instance but this PyTorch has no CUDA; running on CPU")
        if device == "cpu":
            torch.set_num_threads(cpu_threads())
        self.device = torch.device(device)
        self.module = torch.jit.load(str(version_dir / "model.pt"), map_location=self.device).eval()

    def run(self, batches):
        torch = self.torch
        # The JIT's profiling executor re-specialises the graph for new shapes, and every batch has a new
        # shape; without it each op runs as in eager PyTorch, at a steady speed.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return [
                self.module(*(torch.from_numpy(feeds[name]).to(self.device, non_blocking=True) for name in INPUTS))
                .float().cpu().numpy()
                for feeds in batches
            ]


_RUNTIMES = {"onnxruntime": _OnnxRuntime, "openvino": _OpenVinoRuntime, "torch": _TorchRuntime}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = contract.parameters(config, contract.ENCODER_RUNTIME, contract.MAX_PADDING_RATIO)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.runtime = _RUNTIMES[params[contract.ENCODER_RUNTIME]](version_dir, args, config, params)
        self.token_level = len(config["output"][0]["dims"]) == 2
        self.dim = config["output"][0]["dims"][-1]
        self.max_ratio = float(params[contract.MAX_PADDING_RATIO])
        # The family must outlive its metrics, so it is kept on the model.
        self.token_metrics = pb_utils.MetricFamily(
            name="bertserve_encoder_tokens_total",
            description="Tokens the encoder received (real) and ran, padding included (computed)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.real_tokens = self.token_metrics.Metric(labels={"model": args["model_name"], "kind": "real"})
        self.computed_tokens = self.token_metrics.Metric(labels={"model": args["model_name"], "kind": "computed"})
        pb_utils.Logger.log_info(f"encoder running on {self.runtime.device}")

    def execute(self, requests):
        try:
            return self._execute(requests)
        except Exception:
            return answer_failure(requests, "encoder")

    def _execute(self, requests):
        per_request = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS}
            for request in requests
        ]
        # Every request's rows in one block per input, padded to the widest request: each group is then one
        # gather, not a copy per row.
        width = max(arrays[contract.INPUT_IDS].shape[1] for arrays in per_request)
        block = {name: np.concatenate([np.pad(arrays[name], ((0, 0), (0, width - arrays[name].shape[1])))
                                       for arrays in per_request]) for name in INPUTS}
        lengths = block[contract.ATTENTION_MASK].sum(axis=1)
        groups = length_groups(lengths.tolist(), self.max_ratio)
        batches = []
        for group in groups:
            rows = np.asarray(group)
            batches.append({name: block[name][rows, : lengths[rows].max()] for name in INPUTS})
        outputs = [None] * len(lengths)
        for group, result in zip(groups, self.runtime.run(batches)):
            for slot, g in enumerate(group):
                outputs[g] = result[slot]
        self.real_tokens.increment(int(lengths.sum()))
        self.computed_tokens.increment(sum(feeds[contract.INPUT_IDS].size for feeds in batches))

        responses, start = [], 0
        for arrays in per_request:
            count, request_width = arrays[contract.INPUT_IDS].shape
            mine = outputs[start : start + count]
            start += count
            if self.token_level:
                block = np.zeros((count, request_width, self.dim), np.float32)
                for row, vectors in enumerate(mine):
                    block[row, : len(vectors)] = vectors[:request_width]
            else:
                block = np.stack(mine).astype(np.float32, copy=False)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(contract.EMBEDDING, block)]))
        return responses
