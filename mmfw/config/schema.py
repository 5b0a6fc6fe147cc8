"""The JSON schema of experiment YAML files, for editors (``mmfw schema``).

pydantic's schema of :func:`~mmfw.config.experiment_config_class` describes a complete config. A file may also
``extends: base.yaml`` (or a list of files) and then sets only what it changes, at any depth, so the schema has two
levels: every file is checked against the schema with nothing required (every section, component and policy mapping
may be partial; unknown keys, wrong types and unknown component ``type`` names are errors), and a file without
``extends`` must also be a complete config.
"""

from __future__ import annotations

import copy
from typing import Any

from mmfw.config.experiment import experiment_config_class
from mmfw.config.kinds import Registries

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ROOT = "ExperimentConfig"
_PARTIAL = "__extends"
_EXTENDS = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
    "description": "Config file(s) this one inherits from (relative to this file); their keys are merged first and "
                   "this file overrides them.",
}


def _partial(node: Any) -> Any:
    """``node`` with nothing required: no ``required`` lists, ``oneOf`` as ``anyOf`` (several partial mappings may
    fit), no discriminator, and every reference pointing at the partial copy of its definition."""
    if isinstance(node, list):
        return [_partial(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("required", "discriminator"):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = value + _PARTIAL
        elif key == "oneOf":
            out["anyOf"] = _partial(value)
        elif key in ("properties", "$defs", "patternProperties"):
            out[key] = {name: _partial(v) for name, v in value.items()}
        else:
            out[key] = _partial(value)
    return out


def experiment_json_schema(registries: Registries) -> dict[str, Any]:
    """The JSON schema of experiment configs with the components of ``registries`` (plugins included)."""
    schema = copy.deepcopy(experiment_config_class(registries).model_json_schema())
    defs = schema.pop("$defs", {})
    schema["properties"] = {"extends": _EXTENDS, **schema["properties"]}
    defs[_ROOT] = schema
    partial_defs = {name + _PARTIAL: _partial(d) for name, d in defs.items()}
    root = partial_defs.pop(_ROOT + _PARTIAL)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        **{k: v for k, v in root.items() if k != "title"},
        "title": "mmfw experiment config",
        "description": "An mmfw experiment YAML. With `extends`, only the keys that change are needed.",
        "$defs": {**defs, **partial_defs},
        "if": {"required": ["extends"]},
        "else": {"$ref": f"#/$defs/{_ROOT}"},
    }
