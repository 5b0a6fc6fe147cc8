"""The generic registry: exact lookup, helpful unknown-name errors, loud duplicates."""

from __future__ import annotations

from typing import Literal

import pytest

from mmfw.config.base import ConnectorConfig
from mmfw.registry import DuplicateComponentError, Registry, RegistryError, UnknownComponentError, component


class FooConfig(ConnectorConfig):
    type: Literal["foo"] = "foo"
    width: int = 3


@component("foo", config=FooConfig)
class Foo:
    def __init__(self, cfg: FooConfig, scale: int = 1) -> None:
        self.cfg, self.scale = cfg, scale


class BarConfig(ConnectorConfig):
    type: Literal["bar-baz"] = "bar-baz"


@component("bar-baz", config=BarConfig)
class Bar:
    def __init__(self, cfg: BarConfig) -> None:
        self.cfg = cfg


def test_register_get_and_build_pass_dependencies() -> None:
    reg: Registry = Registry("connector")
    reg.register(Foo)
    assert reg.get("foo") is Foo
    assert reg.config_class("foo") is FooConfig
    built = reg.build(FooConfig(width=5), scale=7)
    assert isinstance(built, Foo) and built.cfg.width == 5 and built.scale == 7
    assert reg.names() == ["foo"] and "foo" in reg and len(reg) == 1
    assert reg.entry("foo").source.endswith("test_registry.Foo")


def test_lookup_is_exact_not_substring_or_case_insensitive() -> None:
    reg: Registry = Registry("connector")
    reg.register(Bar)
    for wrong in ("bar", "Bar-Baz", "bar-baz ", "baz"):
        with pytest.raises(UnknownComponentError):
            reg.get(wrong)


def test_unknown_name_lists_choices_closest_first() -> None:
    reg: Registry = Registry("connector")
    reg.register(Foo)
    reg.register(Bar)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("bar-bax")
    msg = str(info.value)
    assert "unknown connector 'bar-bax'" in msg
    assert "did you mean 'bar-baz'?" in msg
    assert msg.index("'bar-baz'", msg.index("valid choices")) < msg.index("'foo'")


def test_duplicate_names_both_sources() -> None:
    reg: Registry = Registry("connector")
    reg.register(Foo, source="plugin-a")
    with pytest.raises(DuplicateComponentError) as info:
        reg.register(Foo, source="plugin-b")
    assert "'foo'" in str(info.value) and "plugin-a" in str(info.value) and "plugin-b" in str(info.value)


def test_config_type_must_match_name() -> None:
    reg: Registry = Registry("connector")
    with pytest.raises(RegistryError, match="must match"):
        reg.register(Foo, name="other")


def test_undecorated_class_is_rejected() -> None:
    class Plain:
        pass

    with pytest.raises(RegistryError, match="@component"):
        Registry("connector").register(Plain)
