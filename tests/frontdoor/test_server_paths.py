"""What any client can read of a served model (its Triton config needs no key, and `Encoder.info()` and the
bert-as-service config show it) names no path on the server's disk and no internal address."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from bert_serving.client import BertClient

from bertserve import Encoder

from ..conftest import DEFAULT_NAME
from .conftest import internals


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_info_and_every_model_config_name_no_server_path(server, minilm_dir):
    repository = Path(server.config.repository)
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as encoder:
        assert encoder.info().source == minilm_dir.name
    # The full path stays on the server's disk, beside the model.
    assert json.loads((repository / DEFAULT_NAME / "bertserve.json").read_text())["source"] == str(minilm_dir)
    folders = sorted(path.parent.name for path in repository.glob("*/config.pbtxt"))
    assert len(folders) >= 9  # three models of three parts each, at least
    for folder in folders:
        with urllib.request.urlopen(f"{server.http_url}/v2/models/{folder}/config", timeout=30) as answer:
            config = json.load(answer)  # no key asked
        assert config["name"] == folder
        paths = [text for text in _strings(config) if text.startswith(("/", "~")) or str(minilm_dir) in text
                 or str(repository) in text]
        assert not paths, (folder, paths)


def test_the_bert_as_service_config_names_no_server_path_or_triton_address(door, server, minilm_dir):
    port, port_out = door.config.bert_as_service_ports
    with BertClient(ip="127.0.0.1", port=port, port_out=port_out, timeout=60_000) as bc:
        config = bc.server_config
    assert config["model_dir"] == minilm_dir.name
    shown = json.dumps(config)
    assert not [word for word in (*internals(server), str(minilm_dir)) if word in shown], config
