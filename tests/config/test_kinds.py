"""The component kinds are declared once (mmfw.config.kinds.KINDS); everything that lists them derives from it."""

from __future__ import annotations

import pytest

from mmfw.config.experiment import ModelConfig
from mmfw.config.kinds import KIND, KINDS, Registries
from mmfw.config.training import COMPONENTS, FrozenPolicy, FullPolicy, PolicyConfig
from mmfw.inspection import MODULES
from mmfw.registry import Registry


def test_registries_has_one_labelled_registry_per_kind() -> None:
    registries = Registries()
    assert list(registries.kinds()) == ["vision_encoders", "connectors", "llms", "image_strategies", "executors"]
    for kind in KINDS:
        registry = registries.of(kind)
        assert isinstance(registry, Registry) and registry is registries.of(kind.key)
        assert registry.kind == kind.label
    with pytest.raises(AttributeError, match="no registry 'chat_templates'; kinds: vision_encoders"):
        registries.chat_templates  # noqa: B018


def test_model_and_policy_sections_have_one_field_per_kind_in_order() -> None:
    keys = [k.key for k in KINDS]
    assert keys == ["vision_encoder", "connector", "llm", "image_strategy"]
    assert list(ModelConfig.model_fields) == [*keys, "fusion"]
    assert list(PolicyConfig.model_fields) == [*keys, "modules", "new_token_embeddings"]
    assert COMPONENTS == tuple(keys)
    for kind in KINDS:
        assert ModelConfig.model_fields[kind.key].annotation is kind.config_base
    policy = PolicyConfig()
    assert isinstance(policy.vision_encoder, FrozenPolicy)
    assert all(isinstance(policy.components()[k], FullPolicy) for k in keys if KIND[k].default_policy == "full")
    assert PolicyConfig.model_validate({"llm": "frozen"}).llm == FrozenPolicy()


def test_inspect_report_names_come_from_the_kinds() -> None:
    assert MODULES == {"vision": "vision_encoder", "connector": "connector", "llm": "llm",
                       "image_strategy": "image_strategy"}
