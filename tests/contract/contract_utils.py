"""Helpers of the contract tests: the registries they are parametrised over, example configs, gradient checks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from mmfw.components import Registries, collect_registries, make_plugin_manager

# Installed plugins included: the contract tests double as the conformance kit for third-party components
# (set MMFW_DISABLE_PLUGIN_AUTOLOAD=1 to test the built-ins alone).
REGISTRIES: Registries = collect_registries(make_plugin_manager())

KIND_FIXTURES = {
    "encoder_name": "vision_encoders",
    "connector_name": "connectors",
    "llm_name": "llms",
    "strategy_name": "image_strategies",
}

BASE_COMBO = ("clip", "mlp", "llama", "resize")


def vlm_combos(registries: Registries) -> list[tuple[str, str, str, str]]:
    """Each component once, the others taken from :data:`BASE_COMBO` (encoders, connectors, LLMs, strategies)."""
    combos: list[tuple[str, str, str, str]] = []
    for slot, kind in enumerate(("vision_encoders", "connectors", "llms", "image_strategies")):
        for name in getattr(registries, kind).names():
            combo = list(BASE_COMBO)
            combo[slot] = name
            if tuple(combo) not in combos:
                combos.append(tuple(combo))
    return combos


def all_components(registries: Registries) -> list[tuple[str, str]]:
    """(registry kind, name) of every registered component."""
    return [(kind, name) for kind in KIND_FIXTURES.values() for name in getattr(registries, kind).names()]


def example_config(registries: Registries, kind: str, name: str, tokenizer_dir: Path | None = None):
    """The example config of component ``name`` of registry ``kind``."""
    cfg_cls = getattr(registries, kind).config_class(name)
    if kind == "llms":
        return cfg_cls.example(tokenizer=str(tokenizer_dir))
    return cfg_cls.example()


def missing_grads(named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Names of trainable parameters that received no gradient (or a non-finite one)."""
    return [n for n, p in named_parameters
            if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
