"""What the GPU harness measures: models of BERT-base's and MiniLM's shapes, in-process PyTorch on them, the
service through Triton from client processes, CUDA graphs, and the vectors the service must return."""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from bertserve import contract

from .results import GpuPoint

_log = logging.getLogger("bertserve.bench.gpu")
# The all-MiniLM-L6-v2 shape; BERT-base is BertConfig's default.
MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
# The quick run checks the harness's plumbing on the CPU, not a shape: both models in a small one (not 440 MB).
SMALL_SHAPE = dict(MINILM_SHAPE, num_hidden_layers=2)


def make_models(folder: Path, tokenizer_source: Path, small: bool = False) -> dict[str, Path]:
    """BERT-base and MiniLM-shaped BERT folders with seeded random weights and MiniLM's uncased vocabulary;
    `small`: both in SMALL_SHAPE."""
    import torch
    from transformers import BertConfig, BertModel

    models = {}
    for name, shape in (("bert-base", {}), ("minilm-l6", MINILM_SHAPE)):
        shape = SMALL_SHAPE if small else shape
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        BertModel(BertConfig(**shape)).save_pretrained(target)
        for file in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tokenizer_source / file).is_file():
                shutil.copyfile(tokenizer_source / file, target / file)
        models[name] = target
    return models


class GpuSampler:
    """Mean GPU utilisation over a window, sampled through NVML every 50 ms."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML: no GPU, or nvidia-ml-py missing
            self._nvml = None

    def measure(self, run: Callable[[], object]) -> tuple[object, float]:
        if self._nvml is None:
            return run(), -1.0
        samples, stop = [], threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            result = run()
        finally:
            stop.set()
            thread.join()
        return result, float(np.mean(samples)) if samples else -1.0


def _timed(call: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Sentences/s and p50 latency (ms) of `call` in a closed loop, after two warm-up calls."""
    call(), call()
    latencies, done, stop = [], 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < stop:
        begun = time.perf_counter()
        done += call()
        latencies.append(time.perf_counter() - begun)
    return done / (time.perf_counter() - started), float(np.median(latencies) * 1000)


def in_process(model_dir: Path, texts: dict[int, list[str]], batches: tuple[int, ...], seconds: float,
               sampler: GpuSampler, device: str) -> list[GpuPoint]:
    """What a user would run instead: transformers' BertModel in fp16 with scaled dot-product attention, the
    fast tokenizer and mean pooling in the caller's process; and the same model fed tokens already on the GPU
    (no tokenizer, no transfers): the GPU's own ceiling."""
    import torch
    from transformers import AutoTokenizer, BertModel

    dtype = torch.float16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="sdpa").to(device).eval()
    points = []
    for length, batch in ((length, batch) for length in texts for batch in batches):
        _log.info("in-process %s, length %d, batch %d", model_dir.name, length, batch)
        points += _in_process_point(model, tokenizer, model_dir.name, texts[length][:batch], length, seconds, sampler,
                                    device)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return points


def _in_process_point(model, tokenizer, name: str, chunk: list[str], length: int, seconds: float, sampler: GpuSampler,
                      device: str) -> list[GpuPoint]:
    import torch

    def full() -> int:
        with torch.inference_mode():
            encoded = tokenizer(chunk, padding=True, truncation=True, max_length=length, return_tensors="pt").to(device)
            hidden = model(**encoded).last_hidden_state
            mask = encoded[contract.ATTENTION_MASK].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1).float() / mask.sum(1).float()
            return len(torch.nn.functional.normalize(pooled, dim=-1).cpu())

    with torch.inference_mode():
        resident = tokenizer(chunk, padding=True, truncation=True, max_length=length, return_tensors="pt").to(device)

    def compute_only() -> int:
        with torch.inference_mode():
            hidden = model(**resident).last_hidden_state
            if device == "cuda":
                torch.cuda.synchronize()
            return hidden.shape[0]

    points = []
    for system, call in (("PyTorch fp16 in-process", full), ("PyTorch fp16, tokens already on GPU", compute_only)):
        (rate, p50), util = sampler.measure(lambda: _timed(call, seconds))
        points.append(GpuPoint(name, system, length, 1, len(chunk), rate, p50, util))
    return points


def cuda_graph_gain(model_dir: Path, length: int, batch: int, seconds: float) -> Optional[dict]:
    """Forward passes per second with and without a captured CUDA graph (fixed shape), to see where they pay."""
    import torch
    from transformers import BertModel

    if not torch.cuda.is_available():
        return None
    model = BertModel.from_pretrained(str(model_dir), dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
    ids = torch.randint(1000, 2000, (batch, length), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        def eager() -> int:
            model(input_ids=ids, attention_mask=mask)
            torch.cuda.synchronize()
            return batch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                model(input_ids=ids, attention_mask=mask)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(input_ids=ids, attention_mask=mask)

        def replay() -> int:
            graph.replay()
            torch.cuda.synchronize()
            return batch

        eager_rate, _ = _timed(eager, seconds)
        graph_rate, _ = _timed(replay, seconds)
    del graph, model
    torch.cuda.empty_cache()
    return {"model": model_dir.name, "length": length, "batch": batch, "eager_per_s": eager_rate,
            "graph_per_s": graph_rate, "gain": graph_rate / eager_rate}


def reference_vectors(model_dir: Path, texts: list[str]) -> np.ndarray:
    """transformers' fp32 BertModel on the CPU, mean pooled and normalised: what the service must return."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir)).eval()
    with torch.inference_mode():
        encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
        mask = encoded[contract.ATTENTION_MASK].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def _client(url: str, model: str, texts: list[str], batch: int, threads: int, seconds: float, start, results) -> None:
    """One client process: `threads` closed loops of `batch`-sentence requests through the SDK over gRPC, all
    timed over the same window, which opens when every client is ready (`start`, a barrier)."""
    try:
        results.put(_client_loops(url, model, texts, batch, threads, seconds, start))
    except Exception as exc:  # reported, so that the parent neither waits for nothing nor counts it as zero
        start.abort()
        results.put(repr(exc))


def _client_loops(url: str, model: str, texts: list[str], batch: int, threads: int, seconds: float, start) -> tuple:
    from bertserve import Encoder

    encoder = Encoder(url, model=model, timeout=120, concurrency=1)
    chunks = [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    for chunk in chunks[:threads]:
        encoder.encode(chunk)
    done, latencies, lock, failures = [0], [], threading.Lock(), []
    start.wait(timeout=300)
    stop = time.perf_counter() + seconds

    def loop(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            begun = time.perf_counter()
            try:
                vectors = encoder.encode(chunks[i % len(chunks)])
            except Exception as exc:
                failures.append(repr(exc))
                return
            ended = time.perf_counter()
            if ended <= stop:  # a request still running when the window closes is not counted
                with lock:
                    done[0] += len(vectors)
                    latencies.append(ended - begun)
            i += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    encoder.close()
    if failures:
        raise RuntimeError(f"{len(failures)} client threads failed; first: {failures[0]}")
    return done[0], latencies


def through_triton(url: str, model: str, texts: list[str], batch: int, concurrency: int, seconds: float,
                   sampler: GpuSampler) -> tuple[float, float, float]:
    """Sentences/s, p50 latency and GPU utilisation with `concurrency` requests in flight, spread over up to
    8 client processes that measure one common window."""
    processes = min(concurrency, 8)
    context = multiprocessing.get_context("spawn")
    results, start = context.Queue(), context.Barrier(processes + 1)
    clients = [context.Process(target=_client, args=(url, model, texts, batch, concurrency // processes
                                                      + (i < concurrency % processes), seconds, start, results))
               for i in range(processes)]
    for client in clients:
        client.start()
    try:
        start.wait(timeout=300)
        _, util = sampler.measure(lambda: time.sleep(seconds))
    except threading.BrokenBarrierError:
        util = -1.0
    outcomes = [results.get(timeout=seconds + 120) for _ in clients]
    for client in clients:
        client.join(timeout=30)
    failed = [outcome for outcome in outcomes if isinstance(outcome, str)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(clients)} client processes failed; first: {failed[0]}")
    latencies = [latency for _, mine in outcomes for latency in mine]
    return sum(done for done, _ in outcomes) / seconds, float(np.median(latencies) * 1000), util


def breakdown(before, after, steps: tuple[str, ...]) -> dict:
    """Mean queue and compute ms per request of each step over a window, from Triton's cumulative statistics."""
    out = {}
    for name in steps:
        b, a = before[name], after[name]
        requests = a.requests - b.requests
        if requests:
            out[name.rsplit("_", 1)[-1] if "_" in name else "ensemble"] = {
                "requests": requests,
                "batch": round((a.inferences - b.inferences) / max(1, a.executions - b.executions), 1),
                "queue_ms": round((a.queue_ms * a.requests - b.queue_ms * b.requests) / requests, 3),
                "compute_ms": round((a.compute_ms * a.requests - b.compute_ms * b.requests) / requests, 3),
            }
    return out

