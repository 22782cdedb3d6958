"""The GPU harness's run: in-process PyTorch, CUDA graphs, then the service exported and measured through Triton,
with `gpu.json` saved after each step so that a run cut short keeps what it measured."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import workload
from .gpu_measure import (GpuSampler, breakdown, cuda_graph_gain, in_process, make_models, reference_vectors,
                          through_triton)
from .results import GpuPoint, GpuSettings, machine, save_gpu

if TYPE_CHECKING:
    from bertserve import Encoder

_log = logging.getLogger("bertserve.bench.gpu")
SERVED = "bertserve (Triton, torch runtime)"


def run(settings: GpuSettings, out: Path, work: Path, tokenizer_source: Path, serve_pythonpath: str = "") -> dict:
    """Measure both models in process and through Triton on this machine's GPU (else its CPU), in `work`."""
    import torch
    from tokenizers import Tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "settings": asdict(settings),
                     "device": device, "points": [],
                     "cuda_graphs": [], "errors": []}
    sampler = GpuSampler()
    models = make_models(work / "models", tokenizer_source, settings.small_models)
    tokenizer = Tokenizer.from_file(str(tokenizer_source / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    texts = {length: workload.sentences(tokenizer, 4 * settings.max_batch_size, length) for length in settings.lengths}

    def save() -> None:
        save_gpu(results, out)

    for name, folder in models.items():
        results["points"] += [asdict(p) for p in in_process(folder, texts, settings.inprocess_batches,
                                                             settings.seconds, sampler, device)]
        save()
    _cuda_graphs(settings, models, results)
    save()
    repository = _export(settings, models, work / "repository", device, results)
    save()

    # The stub's string tensors want numpy 1 (`serve_pythonpath`); should that setup fail to serve,
    # one more try with the environment as it is tells whether it was needed.
    for pythonpath in dict.fromkeys((serve_pythonpath, "")):
        try:
            _serve_and_measure(settings, repository, models, texts, sampler, pythonpath, results, save)
            break
        except Exception as exc:
            _log.exception("serving failed")
            results["errors"].append(f"serving with PYTHONPATH prefix {pythonpath!r}: {exc!r}"[:4000])
            results["points"] = [p for p in results["points"] if not p["system"].startswith("bertserve")]
    save()
    return results


def _cuda_graphs(settings: GpuSettings, models: dict[str, Path], results: dict) -> None:
    """What a captured CUDA graph gains: MiniLM at the shortest length, BERT-base at the longest."""
    for name, length in (("minilm-l6", min(settings.lengths)), ("bert-base", max(settings.lengths))):
        try:
            gain = cuda_graph_gain(models[name], length, settings.max_batch_size, settings.seconds / 2)
            if gain:
                results["cuda_graphs"].append(gain)
        except Exception as exc:  # a measurement aside; the run goes on
            results["errors"].append(f"CUDA graph capture of {name}: {exc!r}")


def _export(settings: GpuSettings, models: dict[str, Path], repository: Path, device: str, results: dict) -> Path:
    """Export each model for the torch runtime (fp16 on a GPU, fp32 on the CPU) into `repository`, timed."""
    from bertserve.export import Deployment, ExportConfig, Pooling, Precision, Runtime, export_model

    precision = Precision.FP16 if device == "cuda" else Precision.FP32
    deployment = Deployment(runtime=Runtime.TORCH, instances=settings.encoder_instances,
                            gpus=(0,) if device == "cuda" else (), tokenizer_instances=settings.tokenizer_instances)
    for name, folder in models.items():
        started = time.monotonic()
        export_model(ExportConfig(model_dir=folder, repository=repository, name=name, pooling=Pooling.MEAN,
                                  layers=(-1,), normalize=True, max_seq_len=max(settings.lengths),
                                  max_batch_size=settings.max_batch_size, precision=precision, deployment=deployment))
        results.setdefault("export_s", {})[name] = round(time.monotonic() - started, 1)
    return repository


def _serve_and_measure(settings: GpuSettings, repository: Path, models: dict[str, Path],
                       texts: dict[int, list[str]], sampler: GpuSampler, pythonpath: str, results: dict,
                       save: Callable[[], None]) -> None:
    """Serve `repository` with `pythonpath` first on the Python backend's path, and measure each model through it."""
    from bertserve import Encoder
    from bertserve.server import ServerConfig, TritonServer

    environment = dict(os.environ)
    # What the Python backend's stub imports first (perf/gpu.sh makes its Python read BERTSERVE_STUB_PATH).
    os.environ["BERTSERVE_STUB_PATH"] = os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p)
    config = ServerConfig.loopback(repository, startup_timeout=600)
    try:
        with TritonServer(config) as triton:
            os.environ.clear()
            os.environ.update(environment)
            with Encoder(triton.grpc_url, timeout=60) as status:
                for name, folder in models.items():
                    _measure_served(settings, triton.grpc_url, status, name, folder, texts, sampler, results, save)
    finally:
        os.environ.clear()
        os.environ.update(environment)


def _measure_served(settings: GpuSettings, url: str, status: Encoder, name: str, folder: Path,
                    texts: dict[int, list[str]], sampler: GpuSampler, results: dict, save: Callable[[], None]) -> None:
    """One served model: its vectors against fp32, then each length and load, with Triton's breakdown of each."""
    from bertserve import Encoder

    # Right before fast: the served vectors (fp16 on the serving device) against fp32 on the CPU.
    sample = texts[max(settings.lengths)][:64] + texts[min(settings.lengths)][:64]
    with Encoder(url, model=name, timeout=60) as encoder:
        served = encoder.encode(sample)
    want = reference_vectors(folder, sample)
    cosines = (served * want).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(want, axis=1)
    results.setdefault("min_cosine_to_fp32", {})[name] = float(cosines.min())
    steps = (name, f"{name}_tokenizer", f"{name}_encoder")
    for length in settings.lengths:
        for concurrency in settings.concurrencies:
            _log.info("through Triton: %s, length %d, %d in flight", name, length, concurrency)
            before = {m.name: m for m in status.server_status().models}
            rate, p50, util = through_triton(url, name, texts[length], settings.request_batch, concurrency,
                                             settings.seconds, sampler)
            after = {m.name: m for m in status.server_status().models}
            results["points"].append(asdict(GpuPoint(name, SERVED, length, concurrency, settings.request_batch, rate,
                                                     p50, util, breakdown(before, after, steps))))
            save()
