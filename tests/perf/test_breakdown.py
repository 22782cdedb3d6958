"""The breakdown re-serves one export under other deployments: only the configs it asks for change."""

from __future__ import annotations

from bertserve.model_repository.config import parse
from perf.bench import OPENVINO
from perf.breakdown import _serve_as, variants


def test_variants_rewrite_only_the_configs_they_vary(variants_repository, tmp_path):
    by_label = {v.label: v for v in variants(openvino=True)}
    assert set(by_label) == {"as exported", "2 tokenizer instances", "no encoder batching delay", "OpenVINO latency hint"}
    for label, variant in by_label.items():
        target = tmp_path / label.replace(" ", "-")
        target.mkdir()
        _serve_as(variants_repository, target, OPENVINO, variant)
        tokenizer = parse((target / f"{OPENVINO}_tokenizer" / "config.pbtxt").read_text())
        encoder = parse((target / f"{OPENVINO}_encoder" / "config.pbtxt").read_text())
        assert tokenizer.instance_group[0].count == (2 if label == "2 tokenizer instances" else 1)
        assert encoder.parameters["performance_hint"].string_value == (
            "latency" if label == "OpenVINO latency hint" else "throughput")
        assert (encoder.dynamic_batching.max_queue_delay_microseconds == 0) == (label == "no encoder batching delay")
        # Everything else stays as exported.
        exported = parse((variants_repository / f"{OPENVINO}_encoder" / "config.pbtxt").read_text())
        exported.parameters["performance_hint"].string_value = encoder.parameters["performance_hint"].string_value
        exported.dynamic_batching.max_queue_delay_microseconds = encoder.dynamic_batching.max_queue_delay_microseconds
        assert encoder == exported
        assert (target / f"{OPENVINO}_encoder" / "1" / "model.xml").read_bytes() == (
            variants_repository / f"{OPENVINO}_encoder" / "1" / "model.xml").read_bytes()
