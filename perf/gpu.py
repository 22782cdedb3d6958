"""GPU figures: the service (torch runtime, fp16) against in-process PyTorch fp16 on the same GPU, in one run.

`bash perf/gpu.sh` runs this on a CUDA machine and writes `gpu.json` and `gpu.md` (the table for
BENCHMARKS.md). The models have the shapes of BERT-base (12 layers, hidden 768) and of all-MiniLM-L6-v2
(6 layers, hidden 384) with seeded random weights: speed does not depend on the weights' values, and no
weights need to travel to a GPU machine. Sentences have exactly the measured number of tokens.

Without a GPU it runs on the CPU in fp32 (`--quick`): that checks the harness, not speed.

This module is the command line; what is measured is in `gpu_measure.py`, the run in `gpu_run.py`, the
BENCHMARKS.md section in `gpu_report.py`, and the settings and machine probe in `results.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

from .gpu_report import RECORDED, ROOT, report, write_section
from .gpu_run import run
from .results import GpuSettings


def main() -> None:
    """`python -m perf.gpu`: measure (`--out`), or record a run and rewrite BENCHMARKS.md from it (`--render`)."""
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
    work = args.work or Path(tempfile.mkdtemp(prefix="bertserve-gpu-"))
    settings = GpuSettings.quick() if args.quick else GpuSettings()
    results = run(settings, args.out, work, args.tokenizer, args.serve_pythonpath)
    text = report(results)
    (args.out / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
