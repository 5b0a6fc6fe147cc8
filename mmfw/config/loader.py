"""YAML loading: ``extends`` inheritance, dotted ``--set`` overrides, validation with located errors.

Merging rules (for ``extends`` and overrides alike): mappings merge key by key, anything else is replaced; when the
``type`` of a component mapping changes, the mapping is replaced as a whole (the old component's fields do not
apply to the new one). Relative paths in ``extends`` are relative to the file that names them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from mmfw.config.experiment import ExperimentConfig, experiment_config_class
from mmfw.config.yaml_safe import YAMLProblem, parse_yaml, read_yaml_file
from mmfw.errors import ConfigError, format_choices

if TYPE_CHECKING:
    from mmfw.config.kinds import Registries

logger = logging.getLogger(__name__)

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


def _read_yaml(path: Path, where: str | None = None) -> dict[str, Any]:
    """One YAML file as a dict; ``where`` names what points at it (``"extends"``) in messages."""
    source = str(path)
    what = f"{where}: " if where else ""
    try:
        data = read_yaml_file(path)
    except FileNotFoundError:
        raise ConfigError([f"{what}config file not found: {path}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{what}{path} is a directory; name a YAML file"]) from None
    except OSError as e:
        raise ConfigError([f"{what}cannot read {path}: {e.strerror or e}"]) from None
    except YAMLProblem as e:
        raise ConfigError([e.located()], source=source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], source=source)
    return data


def load_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config and everything it ``extends`` into one merged dict."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError([f"extends: circular inheritance: {chain}"], source=str(path))
    data = _read_yaml(path, where=f"{_seen[-1]}: extends" if _seen else None)
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
        value = parse_yaml(raw) if raw.strip() else None
    except YAMLProblem as e:
        if "alias" in e.message or "duplicate key" in e.message:
            raise ConfigError([f"override {text!r}: {e.message}"]) from None
        value = raw
    return key.split("."), value


def _set_path(tree: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    """Set ``keys`` in ``tree`` (in place) to ``value`` merged over what is there; integers address list items."""
    node: Any = tree
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth + 1])
        if isinstance(node, list):
            if not key.lstrip("-").isdigit():
                raise ConfigError([f"override {text!r}: {where}: {'.'.join(keys[:depth])} is a list; address an "
                                   f"item by its list index (0 to {len(node) - 1})"])
            index = int(key)
            if not -len(node) <= index < len(node):
                raise ConfigError([f"override {text!r}: {where}: list index {index} is out of range (the list has "
                                   f"{len(node)} item(s))"])
            if last:
                node[index] = _merge(node[index], value)
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last and key == "type" and node.get("type") not in (None, value):
                node.clear()  # another component: the old one's fields do not apply (as in _merge)
                node["type"] = copy.deepcopy(value)
            elif last:
                node[key] = _merge(node[key], value) if key in node else copy.deepcopy(value)
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise ConfigError([f"override {text!r}: {'.'.join(keys[:depth])} is {node!r}, not a mapping or a list"])


_STAGE_LENGTH_KEYS = ("max_steps", "epochs")


def _apply_to_stages(tree: dict[str, Any], keys: list[str], value: Any, text: str) -> list[str]:
    """A ``training.KEY`` override also replaces what a stage sets for KEY itself (so that it takes effect in every
    stage); returns the names of the stages changed."""
    stages = tree.get("stages")
    if len(keys) < 2 or keys[0] != "training" or not isinstance(stages, list):
        return []
    field = keys[1]
    changed = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        sets_it = field in stage or (field in _STAGE_LENGTH_KEYS and any(k in stage for k in _STAGE_LENGTH_KEYS))
        if not sets_it:
            continue
        if field in _STAGE_LENGTH_KEYS:
            for other in _STAGE_LENGTH_KEYS:
                stage.pop(other, None)
        _set_path(stage, keys[1:], value, text)
        changed.append(str(stage.get("name", i)))
    return changed


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each dotted override applied in order.

    Integer parts address list items (``data.train.0.path=...``). On a staged config, ``training.KEY=VALUE`` also
    replaces the value of every stage that sets KEY itself, so a value given on the command line takes effect in
    every stage.
    """
    out = copy.deepcopy(tree)
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(out, keys, value, text)
        changed = _apply_to_stages(out, keys, value, text)
        if changed:
            logger.info("--set %s also applies to stage(s) %s, which set %s themselves", text, ", ".join(changed),
                        keys[1])
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
        # the experiment's own checks (stages, cross-section rules) name their keys: no "<root>: " before them
        problems = [p.removeprefix("<root>: ") for p in format_validation_error(err, data)]
        if any("unknown type" in p for p in problems):
            problems += _missing_component_hints(registries, source)
        raise ConfigError(problems, source=source) from None


PROVENANCE_PREFIX = "# component "


def _missing_component_hints(registries: Registries, source: str | None) -> list[str]:
    """Why a component type may be unknown: a plugin that failed to load, or the package a saved config was
    written with (its ``# component`` header lines, see :func:`dump_config`)."""
    hints = [f"plugin {name} failed to load, so its components are not available: {why}"
             for name, why in getattr(registries, "plugin_failures", {}).items()]
    if source is not None:
        try:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        for line in lines:
            if not line.startswith("#"):
                break
            if line.startswith(PROVENANCE_PREFIX):
                hints.append(f"this config was written with {line.removeprefix(PROVENANCE_PREFIX)}; install it if "
                             "that component is the unknown one")
    return hints


def _distributions_by_module() -> dict[str, list[str]]:
    """Top-level module -> the distributions providing it: mmfw plugins' entry points first, then the installed
    files."""
    from importlib.metadata import entry_points, packages_distributions

    out: dict[str, list[str]] = {}
    for ep in entry_points(group="mmfw.plugins"):
        if ep.dist is not None:
            out.setdefault(ep.value.split(".")[0].split(":")[0], []).append(ep.dist.name)
    for module, names in packages_distributions().items():
        out.setdefault(module, list(names))
    return out


def _provenance(cfg: ExperimentConfig) -> list[str]:
    """``# component model.connector 'avgpool' from the package mmfw-avgpool`` for components of installed
    packages other than mmfw (so that a run trained with a plugin says which plugin it needs)."""
    out = []
    dists: dict[str, list[str]] | None = None
    for field, comp in cfg.model.components().items():
        top = type(comp).__module__.split(".")[0]
        if top == "mmfw":
            continue
        dists = _distributions_by_module() if dists is None else dists
        names = dists.get(top) or [top]
        out.append(f"{PROVENANCE_PREFIX}model.{field} {comp.type!r} from the package {names[0]} (pip install "
                   f"{names[0]})")
    return out


def load_config(path: str | Path, registries: Registries, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load a YAML experiment config, following ``extends`` and applying dotted overrides."""
    tree = load_yaml_tree(path)
    try:
        tree = apply_overrides(tree, overrides)
    except ConfigError as e:
        raise ConfigError(e.problems, source=str(path)) from None
    return load_config_dict(tree, registries, source=str(path))


def dump_config(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML (loads back to an equal object); components of packages other than mmfw
    are named in ``# component`` header lines."""
    header = "".join(line + "\n" for line in _provenance(cfg))
    return header + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg), encoding="utf-8")
    return path
