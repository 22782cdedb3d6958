"""deploy/grafana: the dashboard parses, and every query names metrics a real server exports."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
import yaml

from bertserve import Encoder

from ..conftest import DEFAULT_NAME, STREAM_NAME, settled
from .conftest import DEPLOY, KUBERNETES

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "bertserve.json"
# Triton exports these on GPU machines only (Triton's metrics documentation); every other name must be scraped.
GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_power_usage"}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query (or a Grafana label_values query) reads."""
    query = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)  # strings
    query = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", query)
    query = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?", " ", query)  # matchers, ranges, Grafana variables
    query = re.sub(r"label_values\(([^,()]*),[^)]*\)", r"\1", query)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", query)
    return {n for n in names if n.lower() not in _PROMQL_WORDS}


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


@pytest.fixture(scope="module")
def exported(server) -> set[str]:
    """Metric names on a real server's /metrics after it has answered requests through two models."""
    for name in (DEFAULT_NAME, STREAM_NAME):
        with Encoder(server.grpc_url, model=name) as encoder:
            encoder.encode(["First do it", "then do it right", "then do it better"])

    def scrape() -> str:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            return response.read().decode()

    text = settled(scrape, lambda t: "bertserve_encoder_tokens_total{" in t)
    return set(re.findall(r"^([a-zA-Z_:][\w:]*)(?:\{| )", text, re.MULTILINE))


def test_metric_names_are_read_from_queries():
    assert metric_names('sum by (model) (rate(a_total{model=~"$model(_x|_y)?"}[$__rate_interval])) / 1e6 '
                        '/ clamp_min(sum by (pod) (rate(b{c="d"}[1m])), 1)') == {"a_total", "b"}
    assert metric_names('label_values(nv_x{model!~".+_(a|b)"}, model)') == {"nv_x"}


def test_dashboard_queries_name_only_metrics_the_server_exports(exported):
    # Triton exports its GPU metrics only where it finds a GPU: there they must be scraped, elsewhere the
    # documented names stand in.
    known = exported if "nv_gpu_utilization" in exported else exported | GPU_METRICS
    gpu_used = set()
    for query in queries():
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= known, f"{query!r} reads {sorted(names - known)}"
        gpu_used |= names & GPU_METRICS
    assert "nv_gpu_utilization" in gpu_used


def test_dashboard_shows_what_the_service_needs_watched():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "bertserve" and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    read = set().union(*map(metric_names, queries()))
    assert {"nv_inference_count", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
            "nv_inference_request_failure", "bertserve_encoder_tokens_total", "nv_gpu_utilization"} <= read
    tokens = [q for q in queries() if "bertserve_encoder_tokens_total" in q]
    assert any('kind="real"' in q for q in tokens) and any('kind="computed"' in q for q in tokens)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_autoscaler_rule_reads_metrics_the_server_exports(exported):
    adapter = yaml.safe_load((KUBERNETES / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'pod="p"').replace("<<.GroupBy>>", "pod")
    assert metric_names(query) == {"nv_inference_queue_duration_us", "nv_inference_request_success"} <= exported
    assert metric_names(rule["seriesQuery"]) == {"nv_inference_queue_duration_us"}
