"""YAML loading: ``extends`` inheritance, dotted ``--set`` overrides, validation with located errors.

Merging rules (for ``extends`` and overrides alike): mappings merge key by key, anything else is replaced; when the
``type`` of a component mapping changes, the mapping is replaced as a whole (the old component's fields do not
apply to the new one). Relative paths in ``extends`` are relative to the file that names them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from mmfw.config.experiment import ExperimentConfig, experiment_config_class
from mmfw.errors import ConfigError, format_choices

if TYPE_CHECKING:
    from mmfw.config.kinds import Registries

RESOLVED_CONFIG_NAME = "config.yaml"


def _merge(base: Any, update: Any) -> Any:
    if not isinstance(base, Mapping) or not isinstance(update, Mapping):
        return copy.deepcopy(update)
    if "type" in update and base.get("type") not in (None, update["type"]):
        return copy.deepcopy(dict(update))
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(e, 'problem', e)}"], source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], source=str(path))
    return data


def load_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config and everything it ``extends`` into one merged dict."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError([f"extends: circular inheritance: {chain}"], source=str(path))
    data = _read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(["extends: must be a file path or a list of file paths"], source=str(path))
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _merge(merged, load_yaml_tree(path.parent / parent, (*_seen, resolved)))
    return _merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value read as YAML) into a key path and a value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"override {text!r}: expected KEY.PATH=VALUE"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each dotted override applied in order."""
    out = copy.deepcopy(tree)
    for text in overrides:
        keys, value = parse_override(text)
        update: Any = value
        for key in reversed(keys):
            update = {key: update}
        out = _merge(out, update)
    return out


def _location(loc: Sequence[Any], data: Any) -> str:
    """Dotted YAML path of a pydantic error location, without the union tags pydantic inserts."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(node, Mapping) and isinstance(item, str) and item not in node and node.get("type") == item:
            continue  # tag of a discriminated union
        parts.append(f"[{item}]" if isinstance(item, int) else str(item))
        if isinstance(node, Mapping):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            node = None
    return ".".join(parts).replace(".[", "[") or "<root>"


def format_validation_error(err: ValidationError, data: Any) -> list[str]:
    problems = []
    for e in err.errors():
        where = _location(e["loc"], data)
        kind = e["type"]
        if kind == "union_tag_invalid":
            choices = [c.strip().strip("'") for c in e["ctx"]["expected_tags"].split(",")]
            msg = f"unknown type {e['ctx']['tag']!r}; {format_choices(str(e['ctx']['tag']), choices)}"
            where = f"{where}.type"
        elif kind == "union_tag_not_found":
            msg = "missing 'type' (the component to use)"
            where = f"{where}.type"
        elif kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}")
    return problems


def load_config_dict(data: Mapping[str, Any], registries: Registries, source: str | None = None) -> ExperimentConfig:
    """Validate an already merged dict into the concrete experiment config."""
    cls = experiment_config_class(registries)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data), source=source) from None


def load_config(path: str | Path, registries: Registries, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load a YAML experiment config, following ``extends`` and applying dotted overrides."""
    tree = apply_overrides(load_yaml_tree(path), overrides)
    return load_config_dict(tree, registries, source=str(path))


def dump_config(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML (loads back to an equal object)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg), encoding="utf-8")
    return path
