"""Prompts at export: the sentence-transformers configuration's `prompts` and `default_prompt_name` are recorded
with the model (the tokenizer applies them), and what cannot be served as sentence-transformers encodes is refused.

The folder is tests/conftest.py's `prompts_dir`, as sentence-transformers 6 saves it (its Pooling config names a
`pooling_mode`, its tokenizer holds max_seq_length).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from bertserve.errors import ExportError
from bertserve.export import ExportConfig, Pooling
from bertserve.export.config import plan_export

from ..conftest import DEFAULT_PROMPT_NAME, PROMPTS, TASK_MAX_SEQ_LEN

pytestmark = pytest.mark.server  # `prompts_dir` builds real weights (torch)


def _edited(prompts_dir: Path, target: Path, file: str, **changes) -> Path:
    """A copy of `prompts_dir` whose JSON `file` has `changes`."""
    shutil.copytree(prompts_dir, target)
    path = target / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return target


def test_prompts_are_recorded_with_the_model(export_model, prompts_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bertserve.export")
    info = export_model(ExportConfig(model_dir=prompts_dir, repository=tmp_path))
    assert (info.prompts, info.default_prompt_name) == (PROMPTS, DEFAULT_PROMPT_NAME)
    assert (info.pooling, info.max_seq_len, info.normalize) == (Pooling.MEAN.value, TASK_MAX_SEQ_LEN, False)
    recorded = json.loads((tmp_path / info.name / "bertserve.json").read_text())
    assert (recorded["prompts"], recorded["default_prompt_name"]) == (PROMPTS, DEFAULT_PROMPT_NAME)
    assert f"prompts {PROMPTS}, 'query' by default" in caplog.text


def test_a_folder_without_prompts_records_none(minilm_dir, tiny_bert_dir, tmp_path):
    for folder in (minilm_dir, tiny_bert_dir):  # sentence-transformers with an empty `prompts`; a plain BERT
        plan = plan_export(ExportConfig(model_dir=folder, repository=tmp_path))
        assert (plan.prompts, plan.default_prompt_name) == ({}, "")


def test_no_default_prompt_leaves_every_prompt_to_the_request(prompts_dir, tmp_path):
    folder = _edited(prompts_dir, tmp_path / "m", "config_sentence_transformers.json", default_prompt_name=None)
    plan = plan_export(ExportConfig(model_dir=folder, repository=tmp_path / "repo"))
    assert (plan.prompts, plan.default_prompt_name) == (PROMPTS, "")


@pytest.mark.parametrize("file, changes, message", [
    ("config_sentence_transformers.json", {"default_prompt_name": "document"},
     r"names the default prompt 'document', which is not one of its prompts \('passage', 'query'\); add it"),
    ("config_sentence_transformers.json", {"prompts": {"query": 1}},
     r"prompts are not a map of names to texts: \{'query': 1\}; fix the file"),
    ("1_Pooling/config.json", {"include_prompt": False},
     r"leaves the prompt's tokens out \(include_prompt false\), which bertserve cannot serve"),
    ("1_Pooling/config.json", {"pooling_mode": ["mean", "max"]},
     r"the sentence-transformers pooling \['mean', 'max'\] in .* has no exact bertserve equivalent"),
], ids=["unknown-default", "not-text", "prompt-left-out-of-pooling", "two-poolings"])
def test_what_cannot_be_served_as_configured_is_refused(prompts_dir, tmp_path, file, changes, message):
    folder = _edited(prompts_dir, tmp_path / "m", file, **changes)
    with pytest.raises(ExportError, match=message):
        plan_export(ExportConfig(model_dir=folder, repository=tmp_path / "repo"))
