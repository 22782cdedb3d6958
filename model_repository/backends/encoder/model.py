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

    def run(self, batches, outputs):
        return [self.session.run(outputs, feeds) for feeds in batches]


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
        self.results[key] = [request.get_tensor(name).data.copy() for name in self.outputs]

    def run(self, batches, outputs):
        self.results, self.outputs = {}, outputs
        for b, feeds in enumerate(batches):
            rows = len(feeds[contract.INPUT_IDS])
            bounds = np.linspace(0, rows, min(self.streams, rows) + 1).astype(int)
            for part, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
                self.queue.start_async({name: value[start:end] for name, value in feeds.items()}, (b, part))
        self.queue.wait_all()
        parts = sorted(self.results)
        return [[_concatenate([self.results[key][o] for key in parts if key[0] == b]) for o in range(len(outputs))]
                for b in range(len(batches))]


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

    def run(self, batches, outputs):
        torch = self.torch
        results = []
        # The JIT's profiling executor re-specialises the graph for new shapes, and every batch has a new
        # shape; without it each op runs as in eager PyTorch, at a steady speed.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            for feeds in batches:
                got = self.module(*(torch.from_numpy(feeds[name]).to(self.device, non_blocking=True) for name in INPUTS))
                got = got if isinstance(got, tuple) else (got,)
                results.append([t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in got])
        return results


_RUNTIMES = {"onnxruntime": _OnnxRuntime, "openvino": _OpenVinoRuntime, "torch": _TorchRuntime}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = contract.parameters(config, contract.ENCODER_RUNTIME, contract.MAX_PADDING_RATIO)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.runtime = _RUNTIMES[params[contract.ENCODER_RUNTIME]](version_dir, args, config, params)
        names = [output["name"] for output in config["output"]]
        self.outputs = [name for name in names if name != contract.SPARSE_TERMS]  # what the graph computes
        # A sparse model names its entries' tokens for requests that ask (return_tokens): the vocabulary by id.
        self.vocabulary = _vocabulary(version_dir / "tokenizer.json") if contract.SPARSE_TERMS in names else None
        self.token_level = len(config["output"][0]["dims"]) == 2
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
            picked = np.asarray(group)
            batches.append({name: block[name][picked, : lengths[picked].max()] for name in INPUTS})
        rows = [None] * len(lengths)  # per row, its value of each output
        for group, results in zip(groups, self.runtime.run(batches, self.outputs)):
            for slot, g in enumerate(group):
                rows[g] = [result[slot] for result in results]
        self.real_tokens.increment(int(lengths.sum()))
        self.computed_tokens.increment(sum(feeds[contract.INPUT_IDS].size for feeds in batches))

        responses, start = [], 0
        for request, arrays in zip(requests, per_request):
            count, request_width = arrays[contract.INPUT_IDS].shape
            mine = rows[start : start + count]
            start += count
            tensors = []
            for o, name in enumerate(self.outputs):
                # Token vectors come back as wide as the request's own ids, so they line up with its mask.
                width = request_width if self.token_level else None
                tensors.append(pb_utils.Tensor(name, _stack([row[o] for row in mine], width)))
            if self.vocabulary is not None:
                tensors.append(pb_utils.Tensor(contract.SPARSE_TERMS, self._terms(request, tensors)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


    def _terms(self, request, tensors):
        """The token of each sparse entry ("" for padding) where the request asks for tokens, else no strings."""
        indices, values = (t.as_numpy() for t in tensors)
        asked = pb_utils.get_input_tensor_by_name(request, contract.RETURN_TOKENS)
        if asked is None or not asked.as_numpy().any():
            return np.empty((len(indices), 0), np.object_)
        return np.where(values > 0, self.vocabulary[indices], "").astype(np.object_)


def _vocabulary(path):
    """The tokenizer's tokens, indexed by id."""
    from tokenizers import Tokenizer

    by_token = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
    tokens = np.empty(max(by_token.values()) + 1, np.object_)
    tokens[:] = ""
    for token, index in by_token.items():
        tokens[index] = token
    return tokens


def _stack(rows, width=None):
    """Rows of one output as one array; rows of different widths (tokens of different requests, the sparse
    entries of different groups) are zero-padded to `width`, or to the widest."""
    if width is None and len({row.shape for row in rows}) == 1:
        return np.stack(rows)
    width = width if width is not None else max(row.shape[0] for row in rows)
    block = np.zeros((len(rows), width) + rows[0].shape[1:], rows[0].dtype)
    for r, row in enumerate(rows):
        block[r, : len(row)] = row[:width]
    return block


def _concatenate(parts):
    """Parts of one batch's output (OpenVINO's streams), zero-padded to the widest where widths differ."""
    if len({part.shape[1:] for part in parts}) == 1:
        return np.concatenate(parts)
    return _stack([row for part in parts for row in part])
