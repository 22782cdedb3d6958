"""The SDK installs and imports without torch, transformers or onnx."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires

import pytest

HEAVY = {"torch", "transformers", "onnx", "onnxruntime", "sentence-transformers", "tokenizers", "nvidia-pytriton"}


def _closure(name: str, seen: set[str]) -> set[str]:
    """Distributions `pip install name` pulls in (base requirements and those of the extras it names)."""
    key = name.lower().replace("_", "-")
    if key in seen:
        return seen
    seen.add(key)
    try:
        reqs = requires(name) or []
    except PackageNotFoundError:
        return seen
    for req in reqs:
        base, _, marker = req.partition(";")
        if "extra ==" in marker:
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?", base.strip())
        _closure(match.group(1), seen)
    return seen


def test_base_install_pulls_no_heavy_dependency():
    pulled = _closure("bertserve", set())
    assert "tritonclient" in pulled and "numpy" in pulled
    assert not pulled & HEAVY, pulled & HEAVY


def test_heavy_packages_are_only_in_the_server_extra():
    server = [r for r in requires("bertserve") if 'extra == "server"' in r]
    assert any(r.startswith("torch") for r in server)


@pytest.mark.parametrize("module", ["bertserve", "bertserve.client", "bertserve.cli"])
def test_import_loads_no_heavy_module(module):
    code = (
        f"import sys, {module}; "
        "heavy = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'tokenizers') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
