"""The deployment tools (`make deploy-tools` puts them under .tools) and the rendered Kubernetes overlays."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
TOOLS = ROOT / ".tools"
OVERLAYS = ("base", "overlays/cpu", "overlays/gpu", "overlays/kserve")


def tool(name: str, folder: str) -> Path:
    """A tool from .tools/<folder>/bin, else from PATH; missing, a skip (a failure in CI, which must run it)."""
    path = TOOLS / folder / "bin" / name
    if path.exists():
        return path
    found = shutil.which(name)
    if found:
        return Path(found)
    unavailable(f"{name} is not installed ({path} or on PATH); `make deploy-tools` installs it")


def run(command: list, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """Each overlay as `kubectl kustomize` renders it."""
    kubectl = tool("kubectl", "kubectl")
    out = {}
    for overlay in OVERLAYS:
        result = run([kubectl, "kustomize", KUBERNETES / overlay], timeout=60)
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        out[overlay] = result.stdout
    return out


@pytest.fixture(scope="session")
def objects(rendered) -> dict[str, dict[tuple[str, str], dict]]:
    """Each overlay's objects by (kind, name)."""
    return {overlay: {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(text) if o}
            for overlay, text in rendered.items()}
