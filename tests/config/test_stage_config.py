"""Stage configs: each stage overrides ``training`` (and ``data``) key by key; resolved sections are validated when
the config is loaded, errors name the stage; the resolved config round-trips through YAML."""

from __future__ import annotations

import copy

import pytest
import yaml

from mmfw.config import ConfigError, dump_config, load_config_dict
from mmfw.config.training import FrozenPolicy, FullPolicy, LoraPolicy


@pytest.fixture
def base(tiny_experiment) -> dict:
    exp = copy.deepcopy(tiny_experiment)
    exp["training"].update(max_steps=10, learning_rate=1e-3, policy={"vision_encoder": "frozen"})
    exp["stages"] = [
        {"name": "align", "max_steps": 3, "policy": {"llm": "frozen"}},
        {"name": "finetune", "epochs": 2, "learning_rate": 2e-4, "data": {"max_length": 64},
         "policy": {"llm": {"type": "lora", "r": 8, "target_modules": ["q_proj"]}, "modules": {"llm.model.lm_head": "full"}}},
    ]
    return exp


def test_stages_resolve_key_by_key(base, registries) -> None:
    cfg = load_config_dict(base, registries)
    align, finetune = cfg.stage_plan()
    assert (align.name, align.index, align.implicit) == ("align", 0, False)
    assert (align.training.max_steps, align.training.epochs, align.training.learning_rate) == (3, None, 1e-3)
    assert align.training.policy.llm == FrozenPolicy() and align.training.policy.connector == FullPolicy()
    assert align.data.max_length == 96
    # epochs in the stage clears max_steps of training; the policy of unnamed modules comes from training
    assert (finetune.training.max_steps, finetune.training.epochs, finetune.training.learning_rate) == (None, 2, 2e-4)
    assert finetune.training.policy.llm == LoraPolicy(r=8, target_modules=("q_proj",))
    assert finetune.training.policy.vision_encoder == FrozenPolicy()
    assert finetune.training.policy.modules == {"llm.model.lm_head": FullPolicy()}
    assert finetune.data.max_length == 64 and finetune.data.train == align.data.train
    assert finetune.training.batch_size == align.training.batch_size == 8


def test_single_stage_config_is_one_implicit_stage(tiny_experiment, registries) -> None:
    cfg = load_config_dict(tiny_experiment, registries)
    (stage,) = cfg.stage_plan()
    assert stage.implicit and stage.name == "train" and stage.training == cfg.training


def test_resolved_config_round_trips_and_dumps_only_what_stages_set(base, registries) -> None:
    cfg = load_config_dict(base, registries)
    dumped = yaml.safe_load(dump_config(cfg))
    assert dumped["stages"][0] == {"name": "align", "max_steps": 3, "policy": {"llm": "frozen"}}
    assert dumped["training"]["policy"]["vision_encoder"] == "frozen"  # shorthand kept for default-only policies
    assert load_config_dict(dumped, registries) == cfg


@pytest.mark.parametrize(("stage", "message"), [
    ({"name": "x", "learnin_rate": 1.0}, "stages[0].learnin_rate: unknown key"),
    ({"name": "x", "max_steps": 0}, "stages[0].max_steps: Input should be greater than 0"),
    ({"name": "x", "policy": {"llm": {"type": "lora", "rank": 4}}}, "stages[0].policy.llm.rank: unknown key"),
    ({"name": "x", "policy": {"llm": "lorra"}}, "stages[0].policy.llm.type: unknown type 'lorra'; did you mean 'lora'"),
    ({"name": "x", "mixed_precision": "bf16"}, "stages[0] (x): mixed_precision applies to the whole run"),
    ({"name": "bad name"}, "stages[0].name: String should match pattern"),
    ({"name": "x", "feature_cache": "cache", "policy": {"vision_encoder": "full"}},
     "stages[0] (x): feature_cache needs a fully frozen vision encoder"),
    ({"name": "x", "max_steps": 2, "epochs": 1}, "stages[0] (x): set only one of max_steps and epochs"),
])
def test_stage_errors_name_the_stage_and_key(base, registries, stage, message) -> None:
    base["stages"] = [stage]
    with pytest.raises(ConfigError) as err:
        load_config_dict(base, registries)
    assert message in str(err.value)


def test_duplicate_names_and_missing_length(base, registries) -> None:
    base["stages"] = [{"name": "a"}, {"name": "a"}]
    with pytest.raises(ConfigError, match=r"duplicate stage name\(s\) \['a'\]"):
        load_config_dict(base, registries)
    del base["training"]["max_steps"]
    base["stages"] = [{"name": "a", "max_steps": 2}, {"name": "b"}]
    with pytest.raises(ConfigError, match=r"stages\[1\] \(b\): set exactly one of max_steps and epochs"):
        load_config_dict(base, registries)
    base["stages"] = []
    with pytest.raises(ConfigError, match="training: set exactly one of max_steps and epochs"):
        load_config_dict(base, registries)


def test_policy_shorthand_and_lora_validation(tiny_experiment, registries) -> None:
    tiny_experiment["training"]["policy"] = {"llm": {"type": "lora", "target_modules": []}}
    with pytest.raises(ConfigError, match="training.policy.llm: target_modules is empty"):
        load_config_dict(tiny_experiment, registries)
    tiny_experiment["training"]["policy"] = {"vision_encoder": {"type": "frozen", "unfreeze_last_blocks": 1,
                                                                "lr_scale": 0.1}, "llm": "lora"}
    policy = load_config_dict(tiny_experiment, registries).training.policy
    assert policy.vision_encoder == FrozenPolicy(unfreeze_last_blocks=1, lr_scale=0.1)
    assert policy.llm == LoraPolicy() and policy.llm.target_modules == "all-linear"
