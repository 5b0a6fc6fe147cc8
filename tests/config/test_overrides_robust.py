"""``--set`` overrides: list items by index, and ``training.KEY`` taking effect in every stage."""

from __future__ import annotations

import pytest
import yaml

from mmfw.config import ConfigError, load_config
from mmfw.config.loader import apply_overrides


def _staged(tiny_experiment: dict, tmp_path) -> str:
    exp = dict(tiny_experiment)
    exp["stages"] = [{"name": "align", "max_steps": 3}, {"name": "finetune", "epochs": 2, "learning_rate": 1e-4},
                     {"name": "polish"}]
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(exp))
    return str(path)


def test_training_override_takes_effect_in_every_stage(tiny_experiment, tmp_path, registries) -> None:
    path = _staged(tiny_experiment, tmp_path)
    cfg = load_config(path, registries, ["training.max_steps=10", "training.learning_rate=0.5"])
    plan = cfg.stage_plan()
    assert [s.training.max_steps for s in plan] == [10, 10, 10]
    assert [s.training.epochs for s in plan] == [None, None, None]
    assert [s.training.learning_rate for s in plan] == [0.5, 0.5, 0.5]
    # without the override, the stages keep their own values
    plain = load_config(path, registries).stage_plan()
    assert [s.training.max_steps for s in plain] == [3, None, 4] and plain[1].training.epochs == 2


def test_a_stage_override_stays_in_its_stage(tiny_experiment, tmp_path, registries) -> None:
    cfg = load_config(_staged(tiny_experiment, tmp_path), registries, ["stages.1.learning_rate=0.25"])
    assert [s.training.learning_rate for s in cfg.stage_plan()] == [3e-3, 0.25, 3e-3]


def test_list_items_by_index() -> None:
    tree = {"data": {"train": [{"path": "a.json"}, {"path": "b.json", "image_root": "r"}]}}
    out = apply_overrides(tree, ["data.train.1.path=c.json", "data.train.-2.image_root=x"])
    assert out["data"]["train"] == [{"path": "a.json", "image_root": "x"}, {"path": "c.json", "image_root": "r"}]
    assert tree["data"]["train"][1]["path"] == "b.json"  # the input is not mutated
    with pytest.raises(ConfigError, match="out of range"):
        apply_overrides(tree, ["data.train.2.path=z.json"])
    with pytest.raises(ConfigError, match="list index"):
        apply_overrides(tree, ["data.train.last.path=z.json"])


def test_type_override_replaces_the_component() -> None:
    tree = {"model": {"connector": {"type": "mlp", "depth": 2}}}
    assert apply_overrides(tree, ["model.connector.type=linear"])["model"]["connector"] == {"type": "linear"}
    assert apply_overrides(tree, ["model.connector.depth=3"])["model"]["connector"] == {"type": "mlp", "depth": 3}
