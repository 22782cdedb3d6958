"""GPU figures: the service (torch runtime, fp16) against in-process PyTorch fp16 on the same GPU, in one run.

`bash perf/gpu.sh` runs this on a CUDA machine and writes `gpu.json` and `gpu.md` (the table for
BENCHMARKS.md). The models have the shapes of BERT-base (12 layers, hidden 768) and of all-MiniLM-L6-v2
(6 layers, hidden 384) with seeded random weights: speed does not depend on the weights' values, and no
weights need to travel to a GPU machine. Sentences have exactly the measured number of tokens.

Without a GPU it runs on the CPU in fp32 (`--quick`): that checks the harness, not speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import workload

_log = logging.getLogger("bertserve.bench.gpu")
ROOT = Path(__file__).resolve().parent
# The all-MiniLM-L6-v2 shape; BERT-base is BertConfig's default.
MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
# The quick run checks the harness's plumbing on the CPU, not a shape: both models in a small one (not 440 MB).
SMALL_SHAPE = dict(MINILM_SHAPE, num_hidden_layers=2)
TARGET_SENTENCES_PER_S = 20_000  # at length 20, through Triton
TARGET_RATIO = 0.8  # of in-process PyTorch fp16, at length 128


@dataclass(frozen=True)
class Settings:
    seconds: float = 3.0
    lengths: tuple[int, ...] = (20, 40, 128)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    request_batch: int = 64  # sentences per client request
    max_batch_size: int = 256  # what the encoder's dynamic batcher merges up to
    inprocess_batches: tuple[int, ...] = (64, 256)
    tokenizer_instances: int = 4
    encoder_instances: int = 2
    small_models: bool = False  # both models in SMALL_SHAPE, under their usual names

    @classmethod
    def quick(cls) -> Settings:
        return cls(seconds=1.0, lengths=(20,), concurrencies=(2,), request_batch=2, max_batch_size=16,
                   inprocess_batches=(8,), tokenizer_instances=1, encoder_instances=1, small_models=True)


@dataclass
class Point:
    model: str
    system: str
    length: int
    concurrency: int  # client requests in flight (in-process: 1)
    batch: int  # sentences per request (in-process: per forward pass)
    sentences_per_s: float
    p50_ms: float
    gpu_util: float  # mean utilisation over the window, percent (-1: unknown)
    breakdown: Optional[dict] = None  # Triton's own figures for the window, ms per request


# -- what is measured ----------------------------------------------------------


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
               sampler: GpuSampler, device: str) -> list[Point]:
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
                      device: str) -> list[Point]:
    import torch

    def full() -> int:
        with torch.inference_mode():
            encoded = tokenizer(chunk, padding=True, truncation=True, max_length=length, return_tensors="pt").to(device)
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
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
        points.append(Point(name, system, length, 1, len(chunk), rate, p50, util))
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
        mask = encoded["attention_mask"].unsqueeze(-1).float()
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


def _breakdown(before, after, steps: tuple[str, ...]) -> dict:
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


# -- the run -------------------------------------------------------------------


def machine() -> dict:
    info = {"cpu": platform.processor() or "", "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        query = "name,driver_version,memory.total"
        info["gpu"] = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = ""
    import torch

    info["torch"] = torch.__version__
    return info


def run(settings: Settings, out: Path, work: Path, tokenizer_source: Path, serve_pythonpath: str = "") -> dict:
    import torch
    from tokenizers import Tokenizer

    from bertserve.export import Deployment, ExportConfig, Pooling, Precision, Runtime, export_model

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
        (out / "gpu.json").write_text(json.dumps(results, indent=2))

    for name, folder in models.items():
        results["points"] += [asdict(p) for p in in_process(folder, texts, settings.inprocess_batches,
                                                             settings.seconds, sampler, device)]
        save()
    for name, length in (("minilm-l6", min(settings.lengths)), ("bert-base", max(settings.lengths))):
        try:
            gain = cuda_graph_gain(models[name], length, settings.max_batch_size, settings.seconds / 2)
            if gain:
                results["cuda_graphs"].append(gain)
        except Exception as exc:  # a measurement aside; the run goes on
            results["errors"].append(f"CUDA graph capture of {name}: {exc!r}")
    save()

    repository = work / "repository"
    precision = Precision.FP16 if device == "cuda" else Precision.FP32
    deployment = Deployment(runtime=Runtime.TORCH, instances=settings.encoder_instances,
                            gpus=(0,) if device == "cuda" else (), tokenizer_instances=settings.tokenizer_instances)
    for name, folder in models.items():
        started = time.monotonic()
        export_model(ExportConfig(model_dir=folder, repository=repository, name=name, pooling=Pooling.MEAN,
                                  layers=(-1,), normalize=True, max_seq_len=max(settings.lengths),
                                  max_batch_size=settings.max_batch_size, precision=precision, deployment=deployment))
        results.setdefault("export_s", {})[name] = round(time.monotonic() - started, 1)
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


def _serve_and_measure(settings: Settings, repository: Path, models: dict[str, Path], texts: dict[int, list[str]],
                       sampler: GpuSampler, pythonpath: str, results: dict, save: Callable[[], None]) -> None:
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
                    # Right before fast: the served vectors (fp16 on the serving device) against fp32 on the CPU.
                    sample = texts[max(settings.lengths)][:64] + texts[min(settings.lengths)][:64]
                    with Encoder(triton.grpc_url, model=name, timeout=60) as encoder:
                        served = encoder.encode(sample)
                    want = reference_vectors(folder, sample)
                    cosines = (served * want).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(want, axis=1)
                    results.setdefault("min_cosine_to_fp32", {})[name] = float(cosines.min())
                    steps = (name, f"{name}_tokenizer", f"{name}_encoder")
                    for length in settings.lengths:
                        for concurrency in settings.concurrencies:
                            _log.info("through Triton: %s, length %d, %d in flight", name, length, concurrency)
                            before = {m.name: m for m in status.server_status().models}
                            rate, p50, util = through_triton(triton.grpc_url, name, texts[length],
                                                             settings.request_batch, concurrency, settings.seconds,
                                                             sampler)
                            after = {m.name: m for m in status.server_status().models}
                            results["points"].append(asdict(Point(
                                name, "bertserve (Triton, torch runtime)", length, concurrency,
                                settings.request_batch, rate, p50, util, _breakdown(before, after, steps))))
                            save()
    finally:
        os.environ.clear()
        os.environ.update(environment)


# -- the report ----------------------------------------------------------------

RECORDED = ROOT / "results" / "gpu.json"  # the run BENCHMARKS.md shows
SECTION_TITLE = "## GPU (fp16 encoder through Triton)"


def recorded() -> Optional[dict]:
    """The recorded GPU run, if one was made."""
    return json.loads(RECORDED.read_text()) if RECORDED.is_file() else None


def section(results: Optional[dict]) -> str:
    """BENCHMARKS.md's GPU section: the recorded run, or the plain statement that there is none."""
    head = [SECTION_TITLE, ""]
    if results is None:
        return "\n".join(head + [
            f"**Not measured yet.** Targets: at least {TARGET_SENTENCES_PER_S:,} sentences/s at length 20 through "
            f"Triton, and at least {TARGET_RATIO}x in-process PyTorch fp16 at length 128, on one GPU, in the same "
            "run. `bash perf/gpu.sh` on a GPU machine measures them (see `perf/gpu.py`).", ""])
    return "\n".join(head + [
        f"Measured {results.get('date', '')} with `bash perf/gpu.sh` (bundle from `perf/gpu_bundle.sh`); raw "
        "numbers in `perf/results/gpu.json`. Models of the shapes of BERT-base and all-MiniLM-L6-v2 with seeded "
        "random weights (speed does not depend on the values); sentences of exactly the given number of tokens; "
        f"{results['settings']['seconds']:.0f} s per point, clients timed over one common window.", "",
        report(results)])


def write_section(markdown: Path, results: dict) -> None:
    """Replace BENCHMARKS.md's GPU section (the last one) with `results`."""
    text = markdown.read_text()
    markdown.write_text(text[: text.index("\n## GPU") + 1] + section(results))


def report(results: dict) -> str:
    """The markdown section for BENCHMARKS.md: one table per model, targets marked met or missed."""
    machine_info, points = results["machine"], results["points"]
    settings = results["settings"]
    lines = [
        f"GPU: **{machine_info.get('gpu') or 'none'}**; CPU: {machine_info['cpu']}, {machine_info['cores']} cores; "
        f"PyTorch {machine_info['torch']}. Service: `--runtime torch --precision fp16`, "
        f"{settings['encoder_instances']} encoder instances on the GPU, {settings['tokenizer_instances']} tokenizer "
        f"instances, batches merged up to {settings['max_batch_size']}; clients send {settings['request_batch']} "
        "sentences per request through the SDK over gRPC, from up to 8 processes. In-process: transformers' "
        "BertModel fp16 with SDPA, tokenizer and mean pooling in the caller's process, its best batch size.",
        "",
    ]
    verdicts = []
    for model in dict.fromkeys(p["model"] for p in points):
        mine = [p for p in points if p["model"] == model]
        served = [p for p in mine if p["system"].startswith("bertserve")]
        lines += [f"**{model}** (sentences/s; GPU utilisation in brackets)", ""]
        concurrencies = sorted({p["concurrency"] for p in served})
        header = ["length", "in-process fp16", "tokens already on GPU"] + [f"bertserve, {c} in flight" for c in concurrencies]
        header.append("best / in-process")
        lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for length in sorted({p["length"] for p in mine}):
            def best(system: str) -> Optional[dict]:
                found = [p for p in mine if p["system"] == system and p["length"] == length]
                return max(found, key=lambda p: p["sentences_per_s"]) if found else None

            base, ceiling = best("PyTorch fp16 in-process"), best("PyTorch fp16, tokens already on GPU")
            row = [str(length), _cell(base), _cell(ceiling)]
            served_here = {p["concurrency"]: p for p in served if p["length"] == length}
            row += [_cell(served_here.get(c)) for c in concurrencies]
            top = max(served_here.values(), key=lambda p: p["sentences_per_s"]) if served_here else None
            ratio = top["sentences_per_s"] / base["sentences_per_s"] if top and base else None
            row.append(f"{ratio:.2f}x" if ratio else "n/a")
            lines.append("| " + " | ".join(row) + " |")
            if top and length == min(p["length"] for p in mine):
                met = top["sentences_per_s"] >= TARGET_SENTENCES_PER_S
                verdicts.append(f"- {model}, length {length}: {top['sentences_per_s']:,.0f} sentences/s through Triton, "
                                f"target {TARGET_SENTENCES_PER_S:,}: **{'met' if met else 'missed'}**")
            if ratio and length == max(p["length"] for p in mine):
                verdicts.append(f"- {model}, length {length}: {ratio:.2f}x in-process PyTorch fp16, target "
                                f"{TARGET_RATIO}x: **{'met' if ratio >= TARGET_RATIO else 'missed'}**")
        lines.append("")
    lines += ["Targets:", ""] + verdicts + [""] + _where_time_goes(points)
    if results.get("min_cosine_to_fp32"):
        cosines = ", ".join(f"{name} {value:.5f}" for name, value in results["min_cosine_to_fp32"].items())
        lines += [f"Served vectors against transformers fp32 on the CPU, 128 sentences: smallest cosine {cosines}.", ""]
    if results.get("errors"):
        lines += ["Errors during the run:", ""] + [f"- `{error[:300]}`" for error in results["errors"]] + [""]
    if results.get("cuda_graphs"):
        lines += ["CUDA graphs (fixed shape, forward passes only, sentences/s):", "",
                  "| model | length | batch | eager | graph | gain |", "|---|---:|---:|---:|---:|---:|"]
        for g in results["cuda_graphs"]:
            lines.append(f"| {g['model']} | {g['length']} | {g['batch']} | {g['eager_per_s']:,.0f} | "
                         f"{g['graph_per_s']:,.0f} | {g['gain']:.2f}x |")
        pays = [f"{g['model']} at length {g['length']}" for g in results["cuda_graphs"] if g["gain"] >= 1.1]
        idle = [f"{g['model']} at length {g['length']}" for g in results["cuda_graphs"] if g["gain"] < 1.1]
        lines += ["", f"CUDA graphs pay where the forward pass is bound by kernel launches ({', '.join(pays) or 'nowhere'}), "
                  f"not where the GPU is already busy ({', '.join(idle) or 'nowhere'}). The torch runtime does not "
                  "capture them.", ""]
    return "\n".join(lines)


def _where_time_goes(points: list[dict]) -> list[str]:
    """Per model, at its longest length and most requests in flight: what limits the service, from Triton's
    statistics (queue and compute per request of each step) and the GPU's utilisation."""
    lines = []
    for model in dict.fromkeys(p["model"] for p in points):
        served = [p for p in points if p["model"] == model and p["system"].startswith("bertserve") and p["breakdown"]]
        if not served:
            continue
        top = max(served, key=lambda p: (p["length"], p["concurrency"]))
        steps = top["breakdown"]
        tokenizer, encoder = steps.get("tokenizer"), steps.get("encoder")
        if not tokenizer or not encoder:
            continue
        if top["gpu_util"] >= 85:
            verdict = "the GPU is the limit"
        elif tokenizer["queue_ms"] > encoder["queue_ms"]:
            verdict = "the tokenizer is the limit (requests wait for it, not for the GPU)"
        else:
            verdict = "the encoder step is the limit, with the GPU not busy: its Python and transfer work"
        lines.append(
            f"- {model}, length {top['length']}, {top['concurrency']} in flight: GPU {top['gpu_util']:.0f}% busy; "
            f"per request, tokenizer {tokenizer['queue_ms']:.1f} ms queued + {tokenizer['compute_ms']:.1f} ms "
            f"(batches of {tokenizer['batch']:.0f}), encoder {encoder['queue_ms']:.1f} ms queued + "
            f"{encoder['compute_ms']:.1f} ms (batches of {encoder['batch']:.0f}): {verdict}.")
    return ["Where the time goes:", ""] + lines + [""] if lines else []


def _cell(point: Optional[dict]) -> str:
    if not point:
        return "n/a"
    util = f" ({point['gpu_util']:.0f}%)" if point["gpu_util"] >= 0 else ""
    return f"{point['sentences_per_s']:,.0f}{util}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gpu.json and gpu.md")
    parser.add_argument("--render", type=Path, metavar="GPU_JSON",
                        help="measure nothing: record this run as perf/results/gpu.json and rewrite BENCHMARKS.md's "
                             "GPU section from it")
    parser.add_argument("--work", type=Path, help="scratch folder for models and the repository (default: a temp dir)")
    parser.add_argument("--tokenizer", type=Path, help="folder with vocab.txt and tokenizer.json (default: MiniLM's)")
    parser.add_argument("--serve-pythonpath", default="", help="put first on the Python backend's path, before "
                        "PYTHONPATH (read through BERTSERVE_STUB_PATH, see perf/gpu.sh)")
    parser.add_argument("--quick", action="store_true", help="a short run that checks the harness, not speed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.render:
        results = json.loads(args.render.read_text())
        if args.render.resolve() != RECORDED.resolve():
            shutil.copyfile(args.render, RECORDED)
        write_section(ROOT / "BENCHMARKS.md", results)
        return
    if args.out is None:
        parser.error("--out is required to measure")
    if args.tokenizer is None:
        from bertserve.server import default_model_dir

        args.tokenizer = default_model_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(__import__("tempfile").mkdtemp(prefix="bertserve-gpu-"))
    results = run(Settings.quick() if args.quick else Settings(), args.out, work, args.tokenizer, args.serve_pythonpath)
    text = report(results)
    (args.out / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
