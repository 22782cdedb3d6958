"""The CLI declares nothing of its own: each choice and default comes from the enum or config class it fills, so
changing one there changes `--help` too; the front door's options make a round trip through its config."""

from __future__ import annotations

import argparse

import pytest

import bertserve.export
import bertserve.export.config
from bertserve import cli
from bertserve.errors import BertserveError
from bertserve.export import Backend, Deployment, PerformanceHint, Pooling, Precision, Runtime
from bertserve.contract import Task
from bertserve.export.config import DEFAULT_MAX_BATCH_SIZE, DEFAULT_SPARSE_MAX_BATCH_SIZE
from bertserve.frontdoor.config import FrontDoorConfig
from bertserve.server.config import ServerConfig


def _options(command: str) -> dict[str, argparse.Action]:
    commands = cli._parser()._subparsers._group_actions[0].choices
    return {flag: action for action in commands[command]._actions for flag in action.option_strings}


def _help(command: str, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command, flag, source", [
    ("export", "--pooling", Pooling), ("export", "--precision", Precision), ("export", "--runtime", Runtime),
    ("export", "--performance-hint", PerformanceHint), ("export", "--task", Task),
])
def test_choices_are_the_enums_values(command, flag, source):
    assert _options(command)[flag].choices == [choice.value for choice in source]


def test_backend_choices_are_the_enums_but_tensorrt_which_format_picks():
    assert _options("export")["--backend"].choices == [b.value for b in Backend if b is not Backend.TENSORRT]


@pytest.mark.parametrize("command, flag, default", [
    *[("export", f"--{field.replace('_', '-')}", getattr(Deployment, field))
      for field in ("instances", "tokenizer_instances", "max_queue_size", "queue_timeout", "max_request_bytes")],
    *[("serve", f"--{field.replace('_', '-')}", getattr(ServerConfig, field))
      for field in ("http_port", "grpc_port", "metrics_port", "host")],
    *[(command, f"--{field.replace('_', '-')}", getattr(FrontDoorConfig, field))
      for command in ("serve", "frontdoor") for field in ("openai_port", "bert_as_service_port")],
    *[("frontdoor", f"--{field.replace('_', '-')}", getattr(FrontDoorConfig, field))
      for field in ("host", "max_request_bytes")],
])
def test_defaults_are_the_config_classes(command, flag, default):
    assert _options(command)[flag].default == default


def test_the_batch_size_defaults_to_the_tasks_which_the_help_names(capsys):
    assert _options("export")["--max-batch-size"].default is None  # the export plan picks it by task
    assert (f"(default: {DEFAULT_MAX_BATCH_SIZE}; sparse models {DEFAULT_SPARSE_MAX_BATCH_SIZE}, "
            in _help("export", capsys))


def test_a_default_changed_at_its_source_shows_in_the_help(monkeypatch, capsys):
    assert "--instances INSTANCES encoder instances per GPU, or on the CPU, sharing its cores (default: 2)" in _help(
        "export", capsys)
    monkeypatch.setattr(Deployment, "instances", 5)
    monkeypatch.setattr(Deployment, "queue_timeout", 2.5)
    text = _help("export", capsys)
    assert "sharing its cores (default: 5)" in text and "turned away; 0: no bound (default: 2.5)" in text


@pytest.mark.parametrize("variable, flag", [("BERTSERVE_API_KEY", "--api-key"), ("BERTSERVE_ADMIN_KEY", "--admin-key")])
def test_keys_fall_back_to_their_environment_variable(monkeypatch, variable, flag):
    monkeypatch.setenv(variable, "a-key-from-the-environment")
    assert _options("serve")[flag].default == "a-key-from-the-environment"
    assert f"${variable}" in _options("serve")[flag].help


@pytest.mark.parametrize("config", [
    FrontDoorConfig(),
    FrontDoorConfig(triton_url="triton:9001", host="127.0.0.1", openai_port=0, bert_as_service_port=5555,
                    bert_as_service_model="m", timeout=7.5, max_request_bytes=1000, max_documents=10, max_windows=5),
])
def test_the_front_door_config_survives_its_command_line(config):
    commands = cli._parser()._subparsers._group_actions[0].choices
    args = commands["frontdoor"].parse_args(config.arguments())
    assert FrontDoorConfig.from_arguments(args, triton_url=args.url, api_key=config.api_key) == config


def _exported(monkeypatch, tmp_path, *args: str):
    """The ExportConfig the CLI builds for `bertserve export tmp_path args`: the export itself is tested in
    tests/export."""
    exported = []

    def export_model(config):
        exported.append(config)
        raise BertserveError("stop here")

    monkeypatch.setattr(bertserve.export, "export_model", export_model)
    assert cli.main(["export", str(tmp_path), "--repository", str(tmp_path / "repo"), *args]) == 1
    (config,) = exported
    return config


@pytest.mark.parametrize("args, task", [([], None), *[(["--task", t.value], t) for t in Task]])
def test_the_task_is_the_folders_unless_forced(monkeypatch, tmp_path, args, task):
    assert _exported(monkeypatch, tmp_path, *args).task is task


@pytest.mark.parametrize("flags, args, expected", [
    ({"avx2", "amx_bf16"}, [], (Runtime.OPENVINO, Precision.AUTO)),  # neither --runtime nor --precision: the CPU's
    ({"avx2"}, [], (Runtime.ONNXRUNTIME, Precision.FP32)),
    ({"avx2", "amx_bf16"}, ["--precision", "int8"], (Runtime.ONNXRUNTIME, Precision.INT8)),  # asked: as asked
    ({"avx2", "amx_bf16"}, ["--gpus", "0"], (Runtime.ONNXRUNTIME, Precision.FP32)),  # a GPU export is not the CPU's
])
def test_a_plain_export_gets_the_cpus_default_encoder(monkeypatch, tmp_path, flags, args, expected):
    monkeypatch.setattr(bertserve.export.config, "cpu_flags", lambda: frozenset(flags))
    config = _exported(monkeypatch, tmp_path, *args)
    assert (config.deployment.runtime, config.precision) == expected
