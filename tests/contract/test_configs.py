"""Config contract of every registered component: naming, a working ``example()``, strictness, exact round trip."""

from __future__ import annotations

import pytest
from contract_utils import example_config
from pydantic import ValidationError

from mmfw.components import Registries
from mmfw.config.base import (
    ComponentConfig,
    ConnectorConfig,
    ImageStrategyConfig,
    LLMConfig,
    VisionEncoderConfig,
)
from mmfw.connectors.base import Connector
from mmfw.encoders.base import VisionEncoder
from mmfw.image_strategies.base import ImageStrategy
from mmfw.llms.base import LanguageModel

PACKAGES = {"vision_encoders": "mmfw.encoders", "connectors": "mmfw.connectors", "llms": "mmfw.llms",
            "image_strategies": "mmfw.image_strategies"}
BASES = {
    "vision_encoders": (VisionEncoder, VisionEncoderConfig),
    "connectors": (Connector, ConnectorConfig),
    "llms": (LanguageModel, LLMConfig),
    "image_strategies": (ImageStrategy, ImageStrategyConfig),
}


def test_component_and_config_classes(registries: Registries, component: tuple[str, str]) -> None:
    kind, name = component
    entry = getattr(registries, kind).entry(name)
    base, cfg_base = BASES[kind]
    assert issubclass(entry.obj, base) and issubclass(entry.config, cfg_base)
    assert name == name.lower() and " " not in name and "_" not in name, "registry keys are lower-case kebab"
    assert entry.config.__name__.endswith("Config")
    assert entry.config.model_fields["type"].default == name
    if entry.obj.__module__.startswith("mmfw."):
        assert entry.obj.__module__.startswith(PACKAGES[kind] + "."), "built-ins live in the folder of their kind"


def test_example_is_valid_and_round_trips(registries: Registries, component: tuple[str, str], tokenizer_dir) -> None:
    kind, name = component
    cfg = example_config(registries, kind, name, tokenizer_dir)
    cfg_cls = getattr(registries, kind).config_class(name)
    assert type(cfg) is cfg_cls and isinstance(cfg, ComponentConfig)
    assert cfg.type == name
    data = cfg.model_dump(mode="json")
    assert cfg_cls.model_validate(data) == cfg
    with pytest.raises(ValidationError, match="no_such_field"):
        cfg_cls.model_validate({**data, "no_such_field": 1})


def test_missing_example_is_a_clear_error() -> None:
    class NoExampleConfig(ComponentConfig):
        type: str = "no-example"

    with pytest.raises(NotImplementedError, match="NoExampleConfig does not implement example"):
        NoExampleConfig.example()
