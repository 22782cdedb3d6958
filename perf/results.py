"""What a benchmark run records, and where: the settings, the rows of the CPU bench (`results.json`, `.csv`), the
points of the GPU harness (`gpu.json`), and the machine both were measured on."""

from __future__ import annotations

import csv
import importlib
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bertserve.export.config import cpu_flags

from .measure import Measurement

_log = logging.getLogger("bertserve.bench")
# The instruction sets that decide CPU inference speed, recorded with every run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
TRITON = "2.51.0 (nvidia-pytriton 0.7.0)"  # the tritonserver both harnesses serve with
GPU_RESULTS = "gpu.json"


# The CPU bench (`make bench`) and the GPU harness (`perf/gpu.sh`) keep settings of their own: they share only
# `seconds`. The bench sweeps client loads against in-process baselines with perf_analyzer windows; the GPU
# harness deploys the service (instances, batch limit) for random-weight models. One class would carry a dozen
# fields meaningless to each harness, and change the `settings` each run records.
@dataclass(frozen=True)
class Settings:
    """How much the CPU bench measures; `quick` keeps the harness working in tests, it proves nothing about speed."""

    seconds: float = 6.0
    window_ms: int = 4000
    stability_percent: int = 50
    tokens: int = 16
    seq_lengths: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    seq_batch: int = 32
    client_batches: tuple[int, ...] = (1, 4, 16, 64, 256)
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16)
    layer_depths: tuple[int, ...] = (-1, -3, -6)
    mixed_lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    many: int = 1024  # sentences in the one large SDK call
    tail_seconds: float = 20.0  # one client, one sentence at a time: long enough for a p99.9 of ~1,000 requests
    tokenizer_lengths: tuple[int, ...] = (16, 128)  # the served tokenizer alone against `tokenizers` in process
    warmup: int = 2  # untimed calls before each in-process, SDK or door measurement
    rerank_documents: int = 1000  # documents one query is reranked against (the door takes at most 1,000)
    cache_size: int = 64 << 20  # bytes of the response cache the repeated-query load is measured with
    cache_queries: int = 50  # distinct queries in the repeated-query load's pool
    cache_clients: int = 16  # client threads of the repeated-query load, each sending one query per request
    recall_corpus: int = 2000  # distinct sentences of the varied corpus searched for compact vectors' recall@10
    recall_queries: int = 100  # the next distinct sentences, held out as queries

    @classmethod
    def quick(cls) -> Settings:
        """One point per sweep and windows too short to look stable: every path runs, speed is not judged."""
        return cls(seconds=0.5, window_ms=500, stability_percent=100_000, seq_lengths=(8,), seq_batch=4,
                   client_batches=(8,), concurrencies=(2,), layer_depths=(-1, -6), mixed_lengths=(8, 32), many=256,
                   tail_seconds=0.5, tokenizer_lengths=(16,), warmup=0,
                   rerank_documents=24,  # the corpus's short hand-written sentences: no 512-token batch
                   cache_size=1 << 20, cache_queries=8, cache_clients=4, recall_corpus=60, recall_queries=8)


@dataclass(frozen=True)
class GpuSettings:
    """How much the GPU harness measures, and how it deploys the service it measures."""

    seconds: float = 3.0
    lengths: tuple[int, ...] = (20, 40, 128)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    request_batch: int = 64  # sentences per client request
    max_batch_size: int = 256  # what the encoder's dynamic batcher merges up to
    inprocess_batches: tuple[int, ...] = (64, 256)
    tokenizer_instances: int = 4
    encoder_instances: int = 2
    small_models: bool = False  # both models in a small shape, under their usual names

    @classmethod
    def quick(cls) -> GpuSettings:
        """A short run on the CPU that checks the harness's plumbing, not speed."""
        return cls(seconds=0.3, lengths=(20,), concurrencies=(2,), request_batch=2, max_batch_size=16,
                   inprocess_batches=(8,), tokenizer_instances=1, encoder_instances=1, small_models=True)


@dataclass
class Row:
    """One measurement of the CPU bench: which system, under which load, and what it achieved."""

    sweep: str
    system: str
    setting: str
    value: float  # the swept value (tokens, batch, clients, layer)
    result: Measurement
    ratio: Optional[float] = None  # sentences/s relative to sentence-transformers at the same setting
    baseline: Optional[Row] = field(default=None, repr=False, compare=False)


@dataclass
class Results:
    """A CPU bench run: its settings, the machine, every row, and the facts the targets are judged on."""

    settings: Settings
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, sweep: str, system: str, setting: str, value: float, result: Measurement,
            baseline: Optional[Row] = None) -> Row:
        """Record a measurement; `baseline` is the sentence-transformers row it is compared with."""
        ratio = result.sentences_per_s / baseline.result.sentences_per_s if baseline else None
        row = Row(sweep, system, setting, value, result, ratio, baseline)
        self.rows.append(row)
        _log.info("%-10s %-42s %-28s %9.1f sent/s  p50 %8.2f ms  p99 %8.2f ms%s", sweep, system, setting,
                  result.sentences_per_s, result.p50_ms, result.p99_ms, f"  x{ratio:.2f}" if ratio else "")
        return row

    def keep_faster(self, baseline: Row, again: Measurement) -> None:
        """Machines drift during a run: keep the baseline's faster measurement, and recompute the ratios on it."""
        if again.sentences_per_s > baseline.result.sentences_per_s:
            baseline.result = again
            if baseline.baseline:  # a baseline compared with another (bf16 autocast with float32)
                baseline.ratio = again.sentences_per_s / baseline.baseline.result.sentences_per_s
            for row in self.rows:
                if row.baseline is baseline:
                    row.ratio = row.result.sentences_per_s / again.sentences_per_s
        _log.info("baseline %s %s measured again: %.1f sent/s kept", baseline.system, baseline.setting,
                  baseline.result.sentences_per_s)


@dataclass
class GpuPoint:
    """One measurement of the GPU harness: a model, a system, a length and a load."""

    model: str
    system: str
    length: int
    concurrency: int  # client requests in flight (in-process: 1)
    batch: int  # sentences per request (in-process: per forward pass)
    sentences_per_s: float
    p50_ms: float
    gpu_util: float  # mean utilisation over the window, percent (-1: unknown)
    breakdown: Optional[dict] = None  # Triton's own figures for the window, ms per request


def save(results: Results, out: Path) -> None:
    """Write a CPU bench run as `results.json` and `results.csv` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": results.machine, "settings": asdict(results.settings), "facts": results.facts,
               "rows": [_flat(row) for row in results.rows]}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(_flat(results.rows[0])))
        writer.writeheader()
        writer.writerows(_flat(row) for row in results.rows)


def _flat(row: Row) -> dict:
    return {"sweep": row.sweep, "system": row.system, "setting": row.setting, "value": row.value,
            "sentences_per_s": round(row.result.sentences_per_s, 2), "p50_ms": round(row.result.p50_ms, 3),
            "p99_ms": round(row.result.p99_ms, 3), "ratio_to_sentence_transformers": (
                round(row.ratio, 3) if row.ratio is not None else None),
            **{key: None if getattr(row.result, key) is None else round(getattr(row.result, key), 3)
               for key in ("p999_ms", "max_ms")}}


def load(path: Path) -> Results:
    """A run written by `save`, read back, to re-render the table and plots without measuring again."""
    data = json.loads(path.read_text())
    rows = [Row(r["sweep"], r["system"], r["setting"], r["value"],
                Measurement(r["sentences_per_s"], r["p50_ms"], r["p99_ms"], r.get("p999_ms"), r.get("max_ms")),
                r["ratio_to_sentence_transformers"])
            for r in data["rows"]]
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()})
    return Results(settings, data["machine"], rows, data["facts"])


def save_gpu(results: dict, out: Path) -> None:
    """Write a GPU harness run (as far as it got) as `gpu.json` in `out`."""
    (out / GPU_RESULTS).write_text(json.dumps(results, indent=2))


def load_gpu(path: Path) -> Optional[dict]:
    """A GPU harness run written by `save_gpu`, or None where there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


# The libraries whose versions a run records: key, module, how to read its version. Those not installed (the GPU
# machine has torch and none of the CPU baselines) are left out.
_LIBRARIES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("onnxruntime", "onnxruntime", lambda module: module.__version__),
    ("torch", "torch", lambda module: module.__version__),
    ("sentence-transformers", "sentence_transformers", lambda module: module.__version__),
    ("openvino", "openvino", lambda module: module.get_version().split("-")[0]),
    ("fastembed", "fastembed", lambda module: module.__version__),
)


def machine() -> dict[str, Any]:
    """The machine a run measured on, for both harnesses: CPU model and cores, the ISA flags of `ISA_FLAGS` it
    has, the GPU ("" without one), Python, tritonserver, the installed libraries' versions, and the date."""
    name, flags = _cpuinfo()
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "isa": " ".join(f for f in ISA_FLAGS if f in flags),
        "gpu": _gpu(),
        "python": platform.python_version(),
        "triton": TRITON,
        **_versions(),
        "date": time.strftime("%Y-%m-%d"),
    }


def cpu_text(machine: dict[str, Any]) -> str:
    """The CPU as the reports print it: "model, N cores" (runs recorded before `cores` had the count in `cpu`)."""
    return f"{machine['cpu']}, {machine['cores']} cores" if "cores" in machine else machine["cpu"]


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo; the platform's processor and no flags without it."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), None)
    return name or platform.processor() or "", set(cpu_flags())


def _gpu() -> str:
    """nvidia-smi's name, driver and memory of each GPU; "" where there is no nvidia-smi."""
    try:
        query = "name,driver_version,memory.total"
        return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _versions() -> dict[str, str]:
    """The version of each of `_LIBRARIES` that is installed."""
    found = {}
    for key, module, version in _LIBRARIES:
        try:
            found[key] = version(importlib.import_module(module))
        except ImportError:
            continue
    return found
