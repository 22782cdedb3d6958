"""The code's shape, read from its source: no import cycle, no function over 80 lines, and every tensor name and
parameter key shared across processes spelled only in contract.py."""

from __future__ import annotations

import ast
import functools
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80
# Names the SDK, the exporter, the backends and the front doors must agree on (contract.py holds each once).
SHARED_NAMES = ("input_ids", "attention_mask", "token_type_ids", "text", "text_pair", "is_tokenized", "return_tokens",
                "tokens", "token_count", "embedding", "max_seq_len", "max_padding_ratio", "length_buckets",
                "max_request_bytes", "cls_token", "sep_token", "unk_token", "runtime", "inference_precision",
                "performance_hint", "intra_op_threads")
# The same words as fields of other protocols and APIs, not of ours: bert-as-service's server config and answers
# (what BertClient reads), OpenAI's embedding objects, and the attribute of Hugging Face's `Encoding`.
FOREIGN = {("frontdoor/bert_as_service.py", "max_seq_len"), ("frontdoor/bert_as_service.py", "tokens"),
           ("frontdoor/openai.py", "embedding"), ("frontdoor/wire.py", "embedding"), ("perf/bench.py", "embedding"),
           ("export/tokenizer.py", "attention_mask")}


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _packages() -> dict[str, Path]:
    """Each package of the product (and perf/) with its folder, as pyproject.toml maps them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}
    return {name: folders.get(name, ROOT / name.replace(".", "/")) for name in setuptools["packages"]} | {
        "perf": ROOT / "perf"}


@functools.cache
def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in _packages().items():
        for path in folder.glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
        for path in folder.glob("*/model.py"):  # the backends' Triton models, files that tritonserver loads
            modules[f"{package}.{path.parent.name}.model"] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project's modules that `name` imports, at load or in a function; not those under TYPE_CHECKING."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    tree = _tree(path)
    guards = [node for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
    skipped = {id(node) for guard in guards for statement in guard.body for node in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield target if target in modules else base


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle in `graph`, or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {target for target in _imports(name, path, modules) if target in modules and target != name}
             for name, path in modules.items()}
    assert len(graph) > 40, "the module map is wrong: the test would prove nothing"
    assert _cycle(graph) == [], "an import cycle"


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def _functions() -> Iterator[tuple[str, int]]:
    for name, path in _modules().items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1


def test_no_function_is_over_80_lines():
    assert [(where, lines) for where, lines in _functions() if lines > MAX_FUNCTION_LINES] == []


@functools.cache
def _spelled() -> dict[str, list[str]]:
    """Where each shared name appears as a string literal outside contract.py."""
    contract = ROOT / "sdk" / "bertserve" / "contract.py"
    spelled: dict[str, list[str]] = {name: [] for name in SHARED_NAMES}
    for path in _modules().values():
        if path != contract:
            for node in ast.walk(_tree(path)):
                where = str(path.relative_to(ROOT))
                if isinstance(node, ast.Constant) and node.value in spelled and (where, node.value) not in FOREIGN:
                    spelled[node.value].append(f"{where}:{node.lineno}")
    return spelled


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_a_shared_name_is_spelled_in_contract_py_alone(name):
    assert _spelled()[name] == []
