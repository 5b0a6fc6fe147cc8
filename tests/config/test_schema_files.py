"""``mmfw schema`` accepts every shipped config (shorthands and ``extends`` included) and still rejects typos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmfw.cli.main import main

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in p.relative_to(REPO).parts
                 and "ablations" not in p.parts or p.name.endswith("-short.yaml"))
"""Experiment configs; sweep files (``base:`` first, tested by tests/sweep) are not experiment configs."""


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Any:
    out = tmp_path_factory.mktemp("schema") / "mmfw.schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    schema = json.loads(out.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: Any, data: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def test_there_are_configs_to_check() -> None:
    names = {p.name for p in CONFIGS}
    assert {"quickstart.yaml", "quickstart-2stage.yaml", "llava-1.5-7b.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_shipped_config_is_valid(validator, path: Path) -> None:
    assert _errors(validator, yaml.safe_load(path.read_text())) == []


def _quickstart() -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())


@pytest.mark.parametrize(("path", "value"), [
    (("model", "connector", "detph"), 3),                 # unknown key of a component
    (("model", "connector", "type"), "mpl"),              # unknown component type
    (("training", "policy", "connector"), "fulll"),       # unknown policy shorthand
    (("training", "policy", "llm"), {"type": "full", "r": 8}),  # a LoRA field on another policy
    (("training", "max_steps"), "ten"),
    (("training", "lr"), 1e-3),                           # unknown section key
])
def test_mistakes_are_rejected_with_or_without_extends(validator, path: tuple[str, ...], value: Any) -> None:
    full = _quickstart()
    node = full
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _errors(validator, full), "complete config"
    partial: dict[str, Any] = {"extends": "quickstart.yaml"}
    node = partial
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    assert _errors(validator, partial), "extends file"


def test_only_a_file_with_extends_may_be_partial(validator) -> None:
    partial = {"training": {"eval_every": None}, "model": {"connector": {"depth": 3}}}
    assert "['model']: 'llm' is a required property" in _errors(validator, partial)
    assert "[]: 'model' is a required property" in _errors(validator, {"name": "x"})
    assert _errors(validator, {"extends": "quickstart.yaml", **partial}) == []
    assert _errors(validator, {"extends": ["a.yaml", "b.yaml"], "name": "x"}) == []
    assert _errors(validator, {"extends": 3})
