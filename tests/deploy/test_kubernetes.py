"""deploy/kubernetes: every overlay renders, validates against Kubernetes' schemas, passes checkov, and runs
commands the real CLI accepts."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from bertserve.cli import _parser

from .conftest import KUBERNETES, OVERLAYS, ROOT, run, tool

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest with every field used here, and the newest known
KSERVE_KINDS = {"InferenceService", "ServingRuntime"}  # custom resources: no schema in kubernetes-validate
CHECKOV_SKIPS = {"CKV_K8S_35", "CKV_K8S_43"}  # each with its reason, inline in base/deployment.yaml


def _pod(objects, overlay: str) -> dict:
    return objects[overlay][("Deployment", "bertserve")]["spec"]["template"]["spec"]


def _containers(pod: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


def _validate(paths, version: str) -> tuple[int, str]:
    result = run([tool("kubernetes-validate", "deploy"), "--strict", "-k", version, *paths], timeout=120)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_overlay_validates_against_the_kubernetes_schemas(rendered, objects, tmp_path, version):
    paths = []
    for overlay, text in rendered.items():
        paths.append(tmp_path / f"{overlay.replace('/', '-')}.yaml")
        paths[-1].write_text(text)
    returncode, output = _validate(paths, version)
    assert returncode == 0, output
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert unknown == KSERVE_KINDS, output
    core = sum(kind not in KSERVE_KINDS for overlay in objects.values() for kind, _ in overlay)
    assert output.count(" passed for resource ") == core, output


def test_the_validator_rejects_a_broken_object(objects, tmp_path):
    deployment = json.loads(json.dumps(objects["overlays/cpu"][("Deployment", "bertserve")]))
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(deployment))
    returncode, output = _validate([tmp_path / "broken.yaml"], KUBERNETES_VERSIONS[-1])
    assert returncode != 0 and "'limit' was unexpected" in output, output


def test_checkov_finds_nothing_unjustified(rendered, tmp_path):
    for overlay, text in rendered.items():
        (tmp_path / f"{overlay.replace('/', '-')}.yaml").write_text(text)
    # --skip-download: checkov runs offline (it would ask Prisma Cloud for its policy metadata).
    result = run([tool("checkov", "deploy"), "-d", tmp_path, "--framework", "kubernetes", "-o", "json",
                  "--skip-download", "--compact"], timeout=300)
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert not failed and result.returncode == 0, failed
    assert report["summary"]["passed"] >= 150, report["summary"]
    skipped = {c["check_id"]: c["check_result"].get("suppress_comment", "") for c in results["skipped_checks"]}
    assert set(skipped) == CHECKOV_SKIPS
    assert all(len(reason) > 40 for reason in skipped.values()), skipped


def test_pods_run_non_root_on_a_read_only_root_filesystem(objects):
    for overlay in ("base", "overlays/cpu", "overlays/gpu"):
        pod = _pod(objects, overlay)
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] >= 10000
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(pod).values():
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
        namespace = objects[overlay][("Namespace", "bertserve")]
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_python_backend_gets_a_sized_shared_memory(objects):
    for overlay, size in (("overlays/cpu", "1Gi"), ("overlays/gpu", "4Gi")):
        pod = _pod(objects, overlay)
        (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": size}
        mounts = {m["mountPath"]: m["name"] for m in _containers(pod)["triton"]["volumeMounts"]}
        assert mounts["/dev/shm"] == "dshm"


def test_gpu_overlay_asks_for_a_gpu_node_and_the_cpu_overlay_does_not(objects):
    gpu, cpu = _pod(objects, "overlays/gpu"), _pod(objects, "overlays/cpu")
    triton = _containers(gpu)["triton"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    for overlay, prefix in (("overlays/cpu", "cpu"), ("overlays/gpu", "gpu")):
        models = next(o for (kind, name), o in objects[overlay].items()
                      if kind == "ConfigMap" and name.startswith("bertserve-models-"))
        assert models["data"]["BERTSERVE_MODELS_URI"] == f"s3://bertserve-models/{prefix}"


def test_probes_check_a_real_inference(objects):
    containers = _containers(_pod(objects, "overlays/cpu"))
    triton, door = containers["triton"], containers["frontdoor"]
    for probe in ("startupProbe", "readinessProbe"):
        assert triton[probe]["exec"]["command"][:2] == ["bertserve", "health"]
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert door["readinessProbe"]["httpGet"] == {"path": "/health", "port": "openai"}
    assert door["command"][door["command"].index("--url") + 1] == "localhost:8001"


def test_commands_are_what_the_cli_accepts(objects):
    """Every bertserve command line in the manifests parses with the real CLI, flags and all."""
    commands = []
    for overlay in OVERLAYS:
        for obj in objects[overlay].values():
            for container in _find(obj, "containers"):
                commands.append(container["command"])
                commands += [probe["exec"]["command"] for key, probe in container.items()
                             if key.endswith("Probe") and "exec" in probe]
    commands = [c for c in commands if c[0] == "bertserve"]
    assert {c[1] for c in commands} == {"serve", "frontdoor", "health"}
    for command in commands:
        _parser().parse_args(command[1:])


def test_keys_come_from_a_secret_under_the_names_docker_compose_uses(objects):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_names = set(compose["x-triton"]["environment"]) & {"BERTSERVE_API_KEY", "BERTSERVE_ADMIN_KEY"}
    assert compose_names == {"BERTSERVE_API_KEY", "BERTSERVE_ADMIN_KEY"}
    containers = _containers(_pod(objects, "overlays/cpu"))
    secrets = {}
    for name in ("triton", "frontdoor"):
        for env in containers[name]["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secrets[(name, env["name"])] = (ref["name"], ref["key"], ref.get("optional", False))
    assert secrets == {
        ("triton", "BERTSERVE_API_KEY"): ("bertserve-keys", "api-key", True),
        ("triton", "BERTSERVE_ADMIN_KEY"): ("bertserve-keys", "admin-key", False),
        ("frontdoor", "BERTSERVE_API_KEY"): ("bertserve-keys", "api-key", True),
    }


def test_service_exposes_http_grpc_metrics_and_openai(objects):
    service = objects["overlays/cpu"][("Service", "bertserve")]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 8002, "openai": 8080}
    pod = _pod(objects, "overlays/cpu")
    ports = {p["name"] for c in pod["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_autoscaler_scales_up_fast_and_down_slow_on_the_adapters_metric(objects):
    adapter = yaml.safe_load((KUBERNETES / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    for overlay, target, deployment in (("overlays/cpu", "50m", "bertserve"), ("overlays/gpu", "20m", "bertserve"),
                                        ("overlays/kserve", "50m", "bertserve-predictor")):
        hpa = objects[overlay][("HorizontalPodAutoscaler", "bertserve")]["spec"]
        (metric,) = hpa["metrics"]
        assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
        assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": target}
        assert hpa["scaleTargetRef"]["name"] == deployment
        up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
        assert up["stabilizationWindowSeconds"] == 0 and down["stabilizationWindowSeconds"] >= 300
        assert max(p["value"] for p in down["policies"] if p["type"] == "Pods") == 1
        assert hpa["minReplicas"] >= 2
    budget = objects["overlays/cpu"][("PodDisruptionBudget", "bertserve")]["spec"]
    assert budget["maxUnavailable"] == 1


def test_kserve_overlay_runs_bertserve_as_the_triton_runtime(objects):
    kserve = objects["overlays/kserve"]
    runtime = kserve[("ServingRuntime", "bertserve-triton")]["spec"]
    service = kserve[("InferenceService", "bertserve")]
    assert service["spec"]["predictor"]["model"]["runtime"] == "bertserve-triton"
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert runtime["supportedModelFormats"][0]["name"] == "triton"
    (container,) = runtime["containers"]
    assert container["command"][container["command"].index("--repository") + 1] == "/mnt/models"
    assert container["image"] == "bertserve-triton:25.12"


def _find(obj, key: str):
    """Every list under `key`, anywhere in `obj`."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, list):
                yield from v
            else:
                yield from _find(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _find(item, key)
