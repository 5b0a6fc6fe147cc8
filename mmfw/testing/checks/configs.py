"""Config and class contracts of every component kind: naming, a working ``example()``, strictness, round trip."""

from __future__ import annotations

import yaml
from pydantic import ValidationError

from mmfw.config.base import (
    ComponentConfig,
    ConnectorConfig,
    ImageStrategyConfig,
    LLMConfig,
    VisionEncoderConfig,
)
from mmfw.config.loader import load_config_dict
from mmfw.connectors.base import Connector
from mmfw.encoders.base import VisionEncoder
from mmfw.image_strategies.base import ImageStrategy
from mmfw.llms.base import LanguageModel
from mmfw.testing.core import KINDS, SLOTS, ComponentUnderTest, contract

BASES = {
    "vision_encoders": (VisionEncoder, VisionEncoderConfig),
    "connectors": (Connector, ConnectorConfig),
    "llms": (LanguageModel, LLMConfig),
    "image_strategies": (ImageStrategy, ImageStrategyConfig),
}
PACKAGES = {"vision_encoders": "mmfw.encoders", "connectors": "mmfw.connectors", "llms": "mmfw.llms",
            "image_strategies": "mmfw.image_strategies"}


@contract(KINDS, "classes")
def classes(cut: ComponentUnderTest) -> None:
    """The component and config classes subclass their kind's bases; the name is lower-case kebab."""
    entry = cut.entry
    base, cfg_base = BASES[cut.kind]
    cut.require(issubclass(entry.obj, base), f"{entry.obj.__qualname__} is not a {base.__module__}.{base.__name__}",
                f"subclass {base.__name__}")
    cut.require(issubclass(entry.config, cfg_base),
                f"config class {entry.config.__qualname__} is not a {cfg_base.__name__}",
                f"subclass mmfw.config.base.{cfg_base.__name__}")
    cut.require(cut.name == cut.name.lower() and not set(" _") & set(cut.name), "the registry name is not kebab-case",
                "registry names are lower-case words joined by '-' (e.g. 'my-encoder')")
    cut.require(entry.config.__name__.endswith("Config"), f"config class {entry.config.__name__} does not end in "
                "'Config'", "name it <Family><Role>Config")
    type_field = entry.config.model_fields.get("type")
    cut.require(type_field is not None and type_field.default == cut.name,
                f"the config's type default is {getattr(type_field, 'default', None)!r}",
                f"declare type: Literal[{cut.name!r}] = {cut.name!r}")
    if entry.obj.__module__.startswith("mmfw."):
        cut.require(entry.obj.__module__.startswith(PACKAGES[cut.kind] + "."),
                    f"built-in {entry.obj.__module__} is outside {PACKAGES[cut.kind]}",
                    "built-ins live in the folder of their kind")


@contract(KINDS, "config-round-trip")
def config_round_trip(cut: ComponentUnderTest) -> None:
    """The example config is an instance of the registered class, and dumping it (JSON and YAML) and loading the
    dump, alone and inside an experiment config, gives an equal config (a run's saved config rebuilds the same
    component)."""
    cfg = cut.config
    cfg_cls = cut.entry.config
    cut.require(type(cfg) is cfg_cls and isinstance(cfg, ComponentConfig),
                f"example() returned a {type(cfg).__qualname__}, not a {cfg_cls.__qualname__}",
                "example() must return an instance of the registered config class")
    cut.require(cfg.type == cut.name, f"example().type is {cfg.type!r}", f"type must be {cut.name!r}")
    data = cfg.model_dump(mode="json")
    again = cut.run("model_validate(model_dump())", lambda: cfg_cls.model_validate(data),
                    "every field must load from its own JSON dump")
    cut.require(again == cfg, f"the config loaded from its dump differs: {again!r} != {cfg!r}",
                "fields must dump to values that load back equal (use pydantic types, no custom objects)")
    text = cut.run("yaml.safe_dump(model_dump(mode='json'))", lambda: yaml.safe_dump(data),
                   "the JSON dump must be plain YAML data")
    cut.require(cfg_cls.model_validate(yaml.safe_load(text)) == cfg, "the config does not survive a YAML round trip",
                "fields must load back equal from YAML (tuples and lists, str keys)")
    slot = SLOTS[cut.kind]
    model = {SLOTS[kind]: cut.partner_config(kind).model_dump(mode="json") for kind in KINDS}
    loaded = cut.run("loading it in an experiment config", lambda: load_config_dict(
        {"model": model, "training": {"max_steps": 1}}, cut.registries).model, "the dump must load through the "
        "registries as `model." + slot + ": {type: " + cut.name + ", ...}` in a YAML experiment")
    cut.require(type(getattr(loaded, slot)) is cfg_cls and getattr(loaded, slot) == cfg,
                f"model.{slot} loaded from an experiment config is {getattr(loaded, slot)!r}, not {cfg!r}",
                "keep the config's fields plain pydantic fields (the loader picks the class by `type`)")


@contract(KINDS, "config-strict")
def config_strict(cut: ComponentUnderTest) -> None:
    """Unknown keys are errors and a config is frozen (configs are never mutated by the code that reads them)."""
    cfg = cut.config
    data = cfg.model_dump(mode="json")
    try:
        cut.entry.config.model_validate({**data, "no_such_field": 1})
    except ValidationError as e:
        cut.require("no_such_field" in str(e), "the error for an unknown key does not name it",
                    "keep extra='forbid' (subclass the mmfw config base)")
    else:
        cut.fail("an unknown key 'no_such_field' was accepted", "keep extra='forbid' (subclass the mmfw config base)")
    try:
        cfg.type = cfg.type
    except ValidationError:
        pass
    else:
        cut.fail("assigning to a config field succeeded", "keep the config frozen (subclass the mmfw config base)")
