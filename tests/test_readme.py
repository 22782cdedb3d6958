"""The README's examples and the error body it shows, run as written against a real server (its addresses, and the
task models' names, replaced by the test server's)."""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bertserve import Encoder, cli
from bertserve.server import byte_size

from .conftest import CLASSIFY_NAME, DEFAULT_NAME, PROMPTS, PROMPTS_NAME, RERANK_NAME, SPARSE_NAME

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


@pytest.fixture(scope="module")
def open_door(server):
    """The front door as `bertserve serve` starts it without --api-key."""
    from bertserve.frontdoor import FrontDoor

    from .frontdoor.conftest import door_config

    with FrontDoor(door_config(server, api_key=None, bert_as_service_port=0)) as door:
        yield door


def test_openai_curl_example_returns_what_the_readme_says(server, open_door):
    match = re.search(r"```sh\n(curl -s localhost:8080/v1/embeddings.*?}'\n)# (\{.*?\})\n", README, re.DOTALL)
    assert match, "the README no longer shows the OpenAI curl example"
    command = match.group(1).replace("localhost:8080", f"127.0.0.1:{open_door.config.openai_port}")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    body = json.loads(result.stdout)
    shown = match.group(2)
    assert f'"model":"{body["model"]}"' in shown and json.dumps(body["usage"], separators=(",", ":")) in shown
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        want = enc.encode(["First do it", "then do it right"])
    assert np.abs(np.array([d["embedding"] for d in body["data"]]) - want).max() <= 1e-5


def test_openai_python_example_runs_as_written(server, open_door):
    block = re.search(r"```python\n(from openai import OpenAI\n.*?)\nfrom langchain_openai", README, re.DOTALL)
    assert block, "the README no longer shows the openai example"
    code = block.group(1).replace("localhost:8080", f"127.0.0.1:{open_door.config.openai_port}")
    scope: dict = {}
    exec(code, scope)
    with Encoder(server.grpc_url, model=DEFAULT_NAME) as enc:
        assert np.abs(np.array(scope["vectors"]) - enc.encode(["First do it"])).max() <= 1e-5


# The README's model names, and the test repository's models of those tasks (and with those prompts).
_MODELS = {"reranker": RERANK_NAME, "sentiment": CLASSIFY_NAME, "splade": SPARSE_NAME, "e5": PROMPTS_NAME}


def _here(code: str, server, door) -> str:
    """`code` as written, pointed at the test server and door and its models."""
    code = code.replace("localhost:8080", f"127.0.0.1:{door.config.openai_port}")
    code = code.replace("localhost:8001", server.grpc_url)
    for shown, name in _MODELS.items():
        code = code.replace(f'"{shown}"', f'"{name}"')
    return code


def _keys(value) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def _section(title: str) -> str:
    """The README's `### title` section, up to the next heading."""
    section = re.search(rf"\n### {re.escape(title)}\n(.*?)(?=\n##)", README, re.DOTALL)
    assert section, f"the README no longer has the {title} section"
    return section.group(1)


def _section_examples(title: str, server, door) -> tuple[dict, dict]:
    """The answer to the section's curl example (which has every key the README shows of it), and what its
    Python example leaves defined, both run as written against the test server and door."""
    section = _section(title)
    ((curl, shown),) = re.findall(r"```sh\n(curl .*?)\n# (.*?)\n```", section, re.DOTALL)
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    result = subprocess.run(["sh", "-c", _here(curl, server, door)], capture_output=True, text=True, timeout=60)
    body = json.loads(result.stdout)
    assert set(re.findall(r'"(\w+)":', shown)) <= _keys(body), (shown, body)
    scope: dict = {}
    exec(_here(code, server, door), scope)
    return body, scope


@pytest.mark.parametrize("title", ["Rerank", "Classify", "Sparse vectors (SPLADE)"])
def test_task_examples_run_as_written(server, open_door, title):
    body, scope = _section_examples(title, server, open_door)
    if title == "Rerank":
        ((result,),) = [body["results"]]
        best = scope["best"]
        assert (body["model"], result["index"]) == (RERANK_NAME, best.index)
        assert abs(result["relevance_score"] - best.score) <= 1e-6 and 0 <= best.score <= 1
    elif title == "Classify":
        assert [row[0]["label"] for row in body["data"]] == scope["labels"] and len(scope["labels"]) == 2
    else:
        (vector,) = body
        assert [entry["index"] for entry in vector] == scope["vector"].indices.tolist()
        assert scope["weights"] == pytest.approx({entry["index"]: entry["value"] for entry in vector}, abs=1e-6)
        assert all(weight > 0 for weight in scope["weights"].values())


_OPTIONS = ("prompt_name", "prompt", "truncation_direction", "long_input", "output_dtype")


def _vectors(body, dtype: str) -> np.ndarray:
    """The door's vectors as the SDK returns them: base64 bytes decoded as `dtype`, lists as they are."""
    rows = [item["embedding"] for item in body["data"]]
    if isinstance(rows[0], str):
        return np.stack([np.frombuffer(base64.b64decode(row), dtype) for row in rows])
    return np.array(rows, dtype)


@pytest.mark.parametrize("title", ["Prompts", "Truncation side", "Long inputs", "Compact vectors"])
def test_option_examples_run_as_written(server, open_door, title):
    """The curl example's answer is the SDK's with the same options; the SDK example runs as written."""
    body, scope = _section_examples(title, server, open_door)
    sent = json.loads(re.search(r"-d '(.*?)'", _here(_section(title), server, open_door), re.DOTALL).group(1))
    options = {name: sent[name] for name in _OPTIONS if name in sent}
    assert options, "the curl example sets none of the options"
    with Encoder(server.grpc_url, model=sent["model"]) as enc:
        want = enc.encode(sent["input"], **options)
        if title == "Long inputs":  # the chapter is over-long, and its vector is not the truncated one's
            assert enc.encode_detailed([scope["chapter"]]).truncated.all()
            assert np.abs(scope["vector"] - enc.encode([scope["chapter"]])[0]).max() > 1e-3
    tolerance = 1e-5 if want.dtype == np.float32 else 0  # compact codes: exactly
    got = _vectors(body, want.dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= tolerance
    if title != "Long inputs":  # the SDK example encodes the curl example's text with its options
        shown = scope["bits" if title == "Compact vectors" else "vectors"]
        assert shown.dtype == want.dtype and np.abs(shown.astype(np.float64) - want).max() <= tolerance
    if title == "Prompts":  # the named prompt is not the default; the default is "query", and "" is none
        with Encoder(server.grpc_url, model=PROMPTS_NAME) as enc:
            assert np.abs(got - enc.encode(sent["input"])).max() > 1e-3
            query = ["How do I stop the server?"]
            assert np.abs(scope["queries"] - enc.encode(query, prompt=PROMPTS["query"])).max() <= 1e-5
            assert np.abs(scope["plain"] - scope["queries"]).max() > 1e-3
        assert scope["prompts"] == PROMPTS


def test_cache_example_parses_as_written_and_status_shows_the_counts(server, capsys):
    """`serve --cache-size` as written (the cache itself: tests/server/test_cache.py), and the columns of
    `bertserve status` the README names."""
    (block,) = re.findall(r"```sh\n(.*?)```", _section("A response cache"), re.DOTALL)
    serve, status = [shlex.split(line.partition("#")[0]) for line in block.strip().splitlines()]
    assert serve[:2] == ["bertserve", "serve"] and status == ["bertserve", "status"]
    args = cli._parser().parse_args(serve[1:])
    assert byte_size(args.cache_size, "--cache-size") == 256_000_000
    assert cli.main([*status[1:], "--url", server.grpc_url]) == 0
    table = capsys.readouterr().out
    (header,) = [line for line in table.splitlines() if "cache hits" in line]
    assert "misses" in header and "hit %" in header, table
