"""The README's curl example and the error body it shows, run as written against a real server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bertserve import Encoder

from .conftest import DEFAULT_NAME

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.fixture(scope="module")
def curl_example() -> str:
    """The curl command in the README, from `curl` to the end of its JSON body."""
    match = re.search(r"```sh\n(curl -s localhost:8000/v2/models/.*?}'\n)#", README, re.DOTALL)
    assert match, "the README no longer shows the curl example"
    return match.group(1)


def _curl(server, command: str) -> str:
    command = command.replace("localhost:8000", server.http_url.removeprefix("http://"))
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_curl_example_returns_the_vectors(server, curl_example):
    body = json.loads(_curl(server, curl_example))
    assert body["model_name"] == DEFAULT_NAME
    (embedding,) = [o for o in body["outputs"] if o["name"] == "embedding"]
    assert (embedding["datatype"], embedding["shape"]) == ("FP32", [2, 384])
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        want = enc.encode(["First do it", "then do it right"])
    assert np.abs(np.array(embedding["data"]).reshape(2, 384) - want).max() <= 1e-5


def test_curl_error_body_is_the_one_the_readme_shows(server, curl_example):
    shown = re.search(r"Bad text is refused .*?`(\{\"error\":.*?\})`", README, re.DOTALL)
    assert shown, "the README no longer shows the error body"
    empty = curl_example.replace('"data": ["First do it", "then do it right"]', '"data": ["", "then do it right"]')
    assert empty != curl_example
    assert _curl(server, empty) == shown.group(1)
