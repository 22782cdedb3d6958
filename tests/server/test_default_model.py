"""The default model: exported into BERTSERVE_HOME on first use, reused after that."""

from __future__ import annotations

import json

from bertserve.info import FORMAT_VERSION
from bertserve.server import DEFAULT_MODEL_NAME, default_repository


def test_exported_on_first_use_then_reused(default_home):
    repository = default_home / "repository"  # the fixture called default_repository on an empty home
    stamp = repository / DEFAULT_MODEL_NAME / "bertserve.json"
    info = json.loads(stamp.read_text())
    assert (info["name"], info["dim"], info["pooling"], info["normalize"], info["format_version"]) == (
        DEFAULT_MODEL_NAME, 384, "mean", True, FORMAT_VERSION)
    assert sorted(p.name for p in repository.iterdir()) == [
        DEFAULT_MODEL_NAME, f"{DEFAULT_MODEL_NAME}_encoder", f"{DEFAULT_MODEL_NAME}_tokenizer"]
    written = {p: p.stat().st_mtime_ns for p in repository.rglob("*") if p.is_file()}
    assert default_repository(default_home) == repository
    assert {p: p.stat().st_mtime_ns for p in repository.rglob("*") if p.is_file()} == written, "exported again"
