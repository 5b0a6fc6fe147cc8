"""Components raise errors about their own fields; the builder puts the YAML path it knows in front."""

from __future__ import annotations

import pytest

from mmfw.connectors.identity import IdentityConnectorConfig
from mmfw.errors import ConfigError, TokenizerRequiredError
from mmfw.image_strategies.anyres import AnyresStrategyConfig
from mmfw.model.builder import build_component, located
from mmfw.specs import VisionGeometry, VisionSpec


def test_config_error_at_prefixes_every_problem() -> None:
    err = ConfigError(["grid_pinpoints[1]: not a multiple", "[0]: bad", "max_tiles: too few"], source="exp.yaml")
    moved = err.at("model.image_strategy")
    assert moved.problems == ["model.image_strategy.grid_pinpoints[1]: not a multiple", "model.image_strategy[0]: bad",
                              "model.image_strategy.max_tiles: too few"]
    assert moved.source == "exp.yaml" and err.problems[0] == "grid_pinpoints[1]: not a multiple"


def test_build_component_locates_the_components_errors(registries) -> None:
    spec = VisionSpec(image_size=(28, 28), patch_size=7, mean=(0.5,) * 3, std=(0.5,) * 3, embed_dim=4)
    geometry = VisionGeometry(spec=spec, connector_tokens=lambda g: g[0] * g[1], connector_grid=lambda g: g)
    with pytest.raises(ConfigError) as err:
        build_component(registries, "image_strategy", AnyresStrategyConfig(grid_pinpoints=[[28, 50]]),
                        geometry=geometry, hidden_size=8)
    assert err.value.problems[0].startswith("model.image_strategy.grid_pinpoints[0]: [28, 50] is not a multiple")
    with pytest.raises(ConfigError) as err:  # a ValueError about its dependencies: located at the component
        build_component(registries, "connector", IdentityConnectorConfig(), in_dim=4, out_dim=8)
    assert err.value.problems[0].startswith("model.connector: ") and "(4)" in err.value.problems[0]


def test_other_mmfw_errors_pass_through() -> None:
    def make():
        raise TokenizerRequiredError("needs llm.architecture.vocab_size")

    with pytest.raises(TokenizerRequiredError):
        located("llm", make)
