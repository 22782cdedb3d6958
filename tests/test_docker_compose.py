"""docker-compose.yml: valid, GPU by default with a CPU profile; what the containers run also runs here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent


def _compose_command() -> list[str] | None:
    """Debian's docker-compose, else the docker compose plugin; neither needs a Docker engine to read the file."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if plugin.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose():
    command = _compose_command()
    if command is None:
        unavailable("neither docker-compose (Debian package) nor the docker compose plugin is installed; "
                    "`make test` installs docker-compose as root")

    def run(*args: str) -> str:
        result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), *args], capture_output=True,
                                text=True, timeout=60, cwd=ROOT, env={**os.environ, "BERTSERVE_MODEL_DIR": ""})
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_compose_file_is_valid(compose):
    compose("config", "-q")
    compose("--profile", "cpu", "config", "-q")
    compose("--profile", "monitoring", "config", "-q")
    assert sorted(compose("--profile", "cpu", "--profile", "monitoring", "config", "--services").split()) == [
        "export", "export-cpu", "frontdoor", "frontdoor-cpu", "grafana", "prometheus", "triton", "triton-cpu"]


def test_front_door_service_talks_to_triton_once_it_is_healthy(compose):
    services = yaml.safe_load(compose("--profile", "cpu", "config"))["services"]
    for door, triton in [("frontdoor", "triton"), ("frontdoor-cpu", "triton-cpu")]:
        service = services[door]
        assert service["depends_on"] == {triton: {"condition": "service_healthy"}}
        command = service["command"]
        assert command[:2] == ["bertserve", "frontdoor"] and command[command.index("--url") + 1] == f"{triton}:8001"
        assert command[command.index("--openai-port") + 1] == "8080"
        assert command[command.index("--bert-as-service-port") + 1] == "0"  # off unless .env sets it
        assert "/health" in " ".join(service["healthcheck"]["test"]) and service["restart"] == "unless-stopped"
        # Triton's own services leave the front doors to this one.
        triton_command = services[triton]["command"]
        assert triton_command[triton_command.index("--openai-port") + 1] == "0"


def test_gpu_service_serves_the_exported_volume_with_health_check(compose):
    services = yaml.safe_load(compose("--profile", "cpu", "config"))["services"]
    triton, cpu = services["triton"], services["triton-cpu"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "deploy" not in cpu
    for service, exporter in [(triton, "export"), (cpu, "export-cpu")]:
        assert service["depends_on"] == {exporter: {"condition": "service_completed_successfully"}}
        assert service["healthcheck"]["test"] == ["CMD", "bertserve", "health", "--url", "localhost:8001"]
        assert service["command"][:2] == ["bertserve", "serve"] and "/opt/tritonserver/bin/tritonserver" in service["command"]
        assert service["restart"] == "unless-stopped"
        assert sorted(p["target"] if isinstance(p, dict) else int(p.split(":")[-1]) for p in service["ports"]) == [8000, 8001, 8002]
    assert services["export"]["command"] == ["--backend", "onnxruntime", "--precision", "fp16"]
    assert services["export-cpu"]["command"] == ["--backend", "python"]


def test_image_has_the_python_backend_security_fixes():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    release = re.search(r"^FROM nvcr.io/nvidia/tritonserver:(\d+)\.(\d+)-py3$", dockerfile, re.MULTILINE)
    assert release and (int(release[1]), int(release[2])) >= (25, 7), "images before 25.07 carry the CVE-2025-233xx chain"


def test_export_script_runs_outside_docker(tiny_bert_dir, tmp_path):
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "BERTSERVE_INPUT": str(tiny_bert_dir),
        "BERTSERVE_REPOSITORY": str(tmp_path / "models"),
        "BERTSERVE_MODEL_NAME": "mine",
        "BERTSERVE_EXPORT_ARGS": "--pooling cls --max-seq-len 32",
    }
    result = subprocess.run(["sh", str(ROOT / "docker" / "export.sh"), "--backend", "python"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "models" / "mine" / "bertserve.json").read_text())
    assert (info["pooling"], info["max_seq_len"], info["backend"], info["source"]) == (
        "cls", 32, "python", str(tiny_bert_dir))


def test_monitoring_profile_scrapes_triton_and_provisions_the_dashboard(compose):
    services = yaml.safe_load(compose("--profile", "cpu", "--profile", "monitoring", "config"))["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    for service in (prometheus, grafana):
        assert service["profiles"] == ["monitoring"] and ":" in service["image"] and ":latest" not in service["image"]
        assert all((p["host_ip"] if isinstance(p, dict) else p).startswith("127.0.0.1") for p in service["ports"])
    for name in ("triton", "triton-cpu", "frontdoor", "export"):
        assert "profiles" not in services[name] or "monitoring" not in services[name]["profiles"]
    mounts = dict(_bind_mount(v) for s in (prometheus, grafana) for v in s["volumes"] if _bind_mount(v))
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:8002" for name in ("triton", "triton-cpu")}
    dashboards = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "dashboards" / "bertserve.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    assert (mounts[folder] / "bertserve.json").is_file()
    (source,) = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["url"] == "http://prometheus:9090" and prometheus["command"][0] == "--config.file=/etc/prometheus/prometheus.yml"


def _bind_mount(volume) -> tuple[str, Path] | None:
    """(target, host path) of a bind mount in either of the forms `config` writes; None for a named volume."""
    if isinstance(volume, dict):
        return (volume["target"], Path(volume["source"])) if volume["type"] == "bind" else None
    source, target = volume.split(":")[:2]
    return (target, Path(source)) if source.startswith("/") else None
