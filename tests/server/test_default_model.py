"""The default model: exported into BERTSERVE_HOME on first use, with this CPU's default encoder; reused after that."""

from __future__ import annotations

import json

from bertserve.export import default_encoder
from bertserve.info import FORMAT_VERSION
from bertserve.server import DEFAULT_MODEL_NAME, default_repository, home


def test_exported_on_first_use_with_the_cpus_encoder_then_reused(tiny_bert_dir, tmp_path, monkeypatch):
    # The tiny BERT stands in for all-MiniLM-L6-v2: the same first-use path, a fraction of the export's time.
    monkeypatch.setattr(home, "default_model_dir", lambda: tiny_bert_dir)
    repository = default_repository(tmp_path)
    assert repository == tmp_path / "repository"
    info = json.loads((repository / DEFAULT_MODEL_NAME / "bertserve.json").read_text())
    assert (info["name"], info["format_version"]) == (DEFAULT_MODEL_NAME, FORMAT_VERSION)
    assert (info["runtime"], info["precision"]) == tuple(choice.value for choice in default_encoder())
    assert sorted(p.name for p in repository.iterdir()) == [
        DEFAULT_MODEL_NAME, f"{DEFAULT_MODEL_NAME}_encoder", f"{DEFAULT_MODEL_NAME}_tokenizer"]
    written = {p: p.stat().st_mtime_ns for p in repository.rglob("*") if p.is_file()}
    assert default_repository(tmp_path) == repository
    assert {p: p.stat().st_mtime_ns for p in repository.rglob("*") if p.is_file()} == written, "exported again"
