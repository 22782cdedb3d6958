"""Variants of one export (the breakdown's deployments, the bench's `ungrouped`): only the configs they vary change."""

from __future__ import annotations

import json

from bertserve.model_repository.config import parse
from bertserve.model_repository.repository import component_names
from perf.bench import OPENVINO, UNGROUPED, UNGROUPED_PADDING_RATIO
from perf.breakdown import _serve_as, variants
from perf.variants import copy_as, padding_ratio

from ..conftest import DEFAULT_NAME


def test_variants_rewrite_only_the_configs_they_vary(variants_repository, tmp_path):
    by_label = {v.label: v for v in variants(openvino=True)}
    assert set(by_label) == {"as exported", "1 instance of each model", "encoder batching delay 2 ms",
                             "OpenVINO latency hint"}
    for label, variant in by_label.items():
        target = tmp_path / label.replace(" ", "-")
        target.mkdir()
        _serve_as(variants_repository, target, OPENVINO, variant)
        tokenizer = parse((target / f"{OPENVINO}_tokenizer" / "config.pbtxt").read_text())
        encoder = parse((target / f"{OPENVINO}_encoder" / "config.pbtxt").read_text())
        exported_tokenizer = parse((variants_repository / f"{OPENVINO}_tokenizer" / "config.pbtxt").read_text())
        exported = parse((variants_repository / f"{OPENVINO}_encoder" / "config.pbtxt").read_text())
        one = label == "1 instance of each model"
        assert (tokenizer.instance_group[0].count, encoder.instance_group[0].count) == (
            (1, 1) if one else (exported_tokenizer.instance_group[0].count, exported.instance_group[0].count))
        assert encoder.parameters["performance_hint"].string_value == (
            "latency" if label == "OpenVINO latency hint" else "throughput")
        assert encoder.dynamic_batching.max_queue_delay_microseconds == (
            2000 if label == "encoder batching delay 2 ms" else exported.dynamic_batching.max_queue_delay_microseconds)
        # Everything else stays as exported.
        exported.parameters["performance_hint"].string_value = encoder.parameters["performance_hint"].string_value
        exported.dynamic_batching.max_queue_delay_microseconds = encoder.dynamic_batching.max_queue_delay_microseconds
        exported.instance_group[0].count = encoder.instance_group[0].count
        assert encoder == exported
        assert (target / f"{OPENVINO}_encoder" / "1" / "model.xml").read_bytes() == (
            variants_repository / f"{OPENVINO}_encoder" / "1" / "model.xml").read_bytes()


def test_a_variant_copied_under_another_name_differs_only_in_names_and_the_edit(default_home, tmp_path):
    """`make bench`'s `ungrouped` model: the default export copied, its padding ratio rewritten, nothing exported."""
    source, target = default_home / "repository", tmp_path / "repository"
    target.mkdir()
    copy_as(source, target, DEFAULT_NAME, padding_ratio(UNGROUPED_PADDING_RATIO), new_name=UNGROUPED)
    assert sorted(p.name for p in target.iterdir()) == [UNGROUPED, f"{UNGROUPED}_encoder", f"{UNGROUPED}_tokenizer"]
    copied_files = 0
    for old, new in zip((DEFAULT_NAME, *component_names(DEFAULT_NAME)), (UNGROUPED, *component_names(UNGROUPED))):
        exported, copied = (parse((repo / name / "config.pbtxt").read_text()) for repo, name in
                            ((source, old), (target, new)))
        assert copied.name == new
        if new == f"{UNGROUPED}_encoder":
            assert exported.parameters["max_padding_ratio"].string_value == "1.2"
            assert float(copied.parameters["max_padding_ratio"].string_value) == UNGROUPED_PADDING_RATIO
            copied.parameters["max_padding_ratio"].string_value = "1.2"
        if new == UNGROUPED:
            assert [s.model_name for s in copied.ensemble_scheduling.step] == list(component_names(UNGROUPED))
            assert copied.parameters["bertserve.name"].string_value == UNGROUPED
            for step, name in zip(copied.ensemble_scheduling.step, component_names(DEFAULT_NAME)):
                step.model_name = name
            copied.parameters["bertserve.name"].string_value = DEFAULT_NAME
        copied.name = old
        assert copied == exported, new
        files = [p.relative_to(source / old) for p in (source / old).rglob("*")
                 if p.is_file() and p.name not in ("config.pbtxt", "bertserve.json") and "__pycache__" not in p.parts]
        assert all((source / old / f).read_bytes() == (target / new / f).read_bytes() for f in files)
        copied_files += len(files)
    assert copied_files >= 3  # the backends' model.py files, tokenizer.json and the encoder's graph
    info = json.loads((target / UNGROUPED / "bertserve.json").read_text())
    assert info == {**json.loads((source / DEFAULT_NAME / "bertserve.json").read_text()), "name": UNGROUPED}
