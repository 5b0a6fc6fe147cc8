"""Config loading: inheritance, overrides, round-trip, and located errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmfw.config import ConfigError, dump_config, load_config, load_config_dict, save_config
from mmfw.config.loader import apply_overrides, load_yaml_tree


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def problems(err: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return err.value.problems


def test_valid_config_round_trips_through_yaml(tiny_experiment: dict, registries, tmp_path: Path) -> None:
    cfg = load_config_dict(tiny_experiment, registries)
    assert cfg.model.connector.type == "mlp" and cfg.model.connector.depth == 2
    assert cfg.model.vision_encoder.architecture.patch_size == 8
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(path, registries)
    assert again == cfg
    assert dump_config(again) == dump_config(cfg)
    assert type(again.model.llm).__name__ == "LlamaLLMConfig"


def test_configs_are_frozen(tiny_experiment: dict, registries) -> None:
    cfg = load_config_dict(tiny_experiment, registries)
    with pytest.raises(Exception, match="frozen"):
        cfg.training.max_steps = 3  # type: ignore[misc]


def test_extends_merges_and_children_win(tiny_experiment: dict, registries, tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", tiny_experiment)
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.yaml",
                  {"extends": "../base.yaml", "training": {"learning_rate": 0.5}, "name": "child"})
    cfg = load_config(child, registries)
    assert cfg.name == "child" and cfg.training.learning_rate == 0.5
    assert cfg.training.max_steps == tiny_experiment["training"]["max_steps"]
    assert load_config(base, registries).training.learning_rate == tiny_experiment["training"]["learning_rate"]


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_yaml_tree(tmp_path / "a.yaml")


def test_dotted_overrides_parse_yaml_values(tiny_experiment: dict, registries) -> None:
    tree = apply_overrides(tiny_experiment, ["training.learning_rate=1e-4", "model.connector.depth=3",
                                             "data.system_prompt=Answer briefly.", "training.eval_every=null"])
    cfg = load_config_dict(tree, registries)
    assert cfg.training.learning_rate == 1e-4 and cfg.model.connector.depth == 3
    assert cfg.data.system_prompt == "Answer briefly." and cfg.training.eval_every is None
    assert tiny_experiment["model"]["connector"]["depth"] == 2  # the input is not mutated


def test_changing_type_replaces_the_component_mapping(tiny_experiment: dict, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["image_strategy"] = {"type": "resize", "size": 32, "interpolation": "bilinear"}
    tree = apply_overrides(exp, ["model.image_strategy.type=pad"])
    assert tree["model"]["image_strategy"] == {"type": "pad"}
    assert load_config_dict(tree, registries).model.image_strategy.type == "pad"


def test_unknown_type_lists_choices_closest_first(tiny_experiment: dict, registries) -> None:
    tree = apply_overrides(tiny_experiment, ["model.image_strategy.type=pda"])
    with pytest.raises(ConfigError) as err:
        load_config_dict(tree, registries)
    (line,) = problems(err)
    assert line.startswith("model.image_strategy.type: unknown type 'pda'; did you mean 'pad'?")
    assert "valid choices: 'pad', " in line


def test_misspelt_and_badly_typed_keys_are_located(tiny_experiment: dict, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["connector"]["detph"] = 2
    exp["training"]["batch_size"] = "eight"
    exp["data"]["train"][0]["pth"] = "x.json"
    with pytest.raises(ConfigError) as err:
        load_config_dict(exp, registries, source="exp.yaml")
    lines = problems(err)
    assert "model.connector.detph: unknown key" in lines
    assert any(p.startswith("training.batch_size: Input should be a valid integer") for p in lines)
    assert "data.train[0].pth: unknown key" in lines
    assert str(err.value).splitlines()[0].startswith("exp.yaml: ")


def test_missing_type_and_missing_sections(tiny_experiment: dict, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    del exp["model"]["connector"]["type"]
    del exp["training"]
    with pytest.raises(ConfigError) as err:
        load_config_dict(exp, registries)
    assert set(problems(err)) == {"model.connector.type: missing 'type' (the component to use)",
                                  "training: required key is missing"}


def test_invalid_yaml_names_line(tmp_path: Path, registries) -> None:
    path = write(tmp_path / "bad.yaml", "model:\n  connector: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, registries)
    assert "line" in str(err.value) and "invalid YAML" in str(err.value) and str(path) in str(err.value)


def test_component_validators_are_located(tiny_experiment: dict, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["llm"]["architecture"]["num_attention_heads"] = 5
    with pytest.raises(ConfigError) as err:
        load_config_dict(exp, registries)
    (line,) = problems(err)
    assert line.startswith("model.llm.architecture: ") and "not divisible" in line


def test_bad_override_syntax(tiny_experiment: dict) -> None:
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides(tiny_experiment, ["training.max_steps"])
