"""Variants of an exported model that differ only in their configs: copied and edited, never exported again.

Exporting MiniLM takes seconds of CPU for the same weights; a copy takes milliseconds. The copy keeps every
file of the export byte for byte; only `config.pbtxt` files (and, renamed, `bertserve.json`) are rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from google.protobuf import text_format

from bertserve import contract
from bertserve.model_repository.config import parse
from bertserve.model_repository.repository import component_names

# Edits the tokenizer and encoder configs (Triton's ModelConfig protobufs) in place.
ConfigEdit = Callable[[Any, Any], None]
_NAME_PARAMETER = "bertserve.name"  # the ensemble's copy of ModelInfo.name (ModelInfo.to_parameters)


def copy_as(source: Path, target: Path, name: str, edit: ConfigEdit, new_name: Optional[str] = None) -> None:
    """Copy model `name` from repository `source` into `target`, as `new_name` if given, its tokenizer and encoder
    configs changed by `edit` alone."""
    new_name = new_name or name
    folders = list(zip((name, *component_names(name)), (new_name, *component_names(new_name))))
    for old, new in folders:
        shutil.copytree(source / old, target / new, ignore=shutil.ignore_patterns("__pycache__"))
    configs = [parse((target / new / "config.pbtxt").read_text()) for _, new in folders]
    ensemble, tokenizer, encoder = configs
    edit(tokenizer, encoder)
    if new_name != name:
        renamed = dict(folders)
        for config, (_, new) in zip(configs, folders):
            config.name = new
        for step in ensemble.ensemble_scheduling.step:
            step.model_name = renamed[step.model_name]
        ensemble.parameters[_NAME_PARAMETER].string_value = new_name
        info_file = target / new_name / "bertserve.json"
        info = json.loads(info_file.read_text())
        info_file.write_text(json.dumps({**info, "name": new_name}, indent=2) + "\n")
    for config, (_, new) in zip(configs, folders):
        (target / new / "config.pbtxt").write_text(text_format.MessageToString(config))


def unchanged(tokenizer: Any, encoder: Any) -> None:
    """The edit that changes nothing: a plain copy of the model."""


def padding_ratio(ratio: float) -> ConfigEdit:
    """An edit that sets the encoder's `max_padding_ratio` (a large value runs each batch as one padded block)."""

    def edit(tokenizer: Any, encoder: Any) -> None:
        if contract.MAX_PADDING_RATIO not in encoder.parameters:
            raise ValueError("the encoder has no max_padding_ratio (only the Python backend groups by length)")
        encoder.parameters[contract.MAX_PADDING_RATIO].string_value = str(ratio)

    return edit
