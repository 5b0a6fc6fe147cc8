"""Tests for the pre-build config checks (mmfw.training.validate, mmfw.config.validate); the CLI catalogue is in tests/cli/test_bad_inputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mmfw.config import ConfigError, load_config_dict
from mmfw.training.validate import (
    DEFAULT_CHECKS,
    ValidationContext,
    check_experiment,
    max_image_tokens,
    validate_experiment,
)


def test_valid_config_has_no_problems(tiny_experiment: dict, registries) -> None:
    cfg = load_config_dict(tiny_experiment, registries)
    assert validate_experiment(cfg, registries) == []
    assert check_experiment(cfg, registries) is cfg


def test_geometry_is_built_on_the_meta_device(tiny_experiment: dict, registries) -> None:
    cfg = load_config_dict(tiny_experiment, registries)
    ctx = ValidationContext(cfg, registries)
    assert ctx.max_image_tokens == 16  # 32 px / 8 px patches, MLP keeps every patch
    assert ctx.llm_geometry.hidden_size == 48 and ctx.llm_geometry.max_positions == 128
    strategy = ctx.build_image_strategy(device="cpu")
    assert strategy.num_tokens((100, 50)) == 16


def test_max_image_tokens_of_anyres_is_its_largest_pinpoint(tiny_experiment: dict, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["image_strategy"] = {"type": "anyres", "grid_pinpoints": [[32, 64], [64, 32], [64, 64], [32, 96]]}
    ctx = ValidationContext(load_config_dict(exp, registries), registries)
    strategy = ctx.image_strategy
    assert next(strategy.parameters()).device == torch.device("meta")
    brute = max(strategy.num_tokens((w, h)) for w in range(8, 200, 8) for h in range(8, 200, 8))
    assert max_image_tokens(strategy) == brute == ctx.max_image_tokens


def test_paths_the_run_generates_are_not_required(tiny_experiment: dict, registries, tmp_path: Path) -> None:
    exp = copy.deepcopy(tiny_experiment)
    out = tmp_path / "synth"
    exp["data"] = {"synthetic": {"out_dir": str(out), "num_train": 10, "num_eval": 5},
                   "build_tokenizer": {"out_dir": str(out / "tokenizer")},
                   "train": [{"path": str(out / "train.json")}], "eval": [{"path": str(out / "eval.json")}],
                   "max_length": 96}
    exp["model"]["llm"]["tokenizer"] = str(out / "tokenizer")
    assert validate_experiment(load_config_dict(exp, registries), registries) == []
    exp["data"]["train"] = [{"path": str(tmp_path / "elsewhere.json")}]
    assert validate_experiment(load_config_dict(exp, registries), registries) == [
        f"data.train[0].path: file not found: {tmp_path / 'elsewhere.json'}"]


def test_hub_ids_are_not_downloaded(tiny_experiment: dict, registries, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation builds on the meta device: an uncached hub id the hub knows is fine (it is not downloaded), one
    the hub cannot give is a located problem (see tests/cli/test_catalogue_commands.py for the offline cases)."""
    import huggingface_hub

    asked = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo, **kw: asked.append(repo))
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["llm"]["tokenizer"] = "some-org/some-tokenizer"
    assert validate_experiment(load_config_dict(exp, registries), registries) == []
    assert asked == ["some-org/some-tokenizer"]  # asked once whether it exists, nothing fetched


def test_extra_checks_can_use_the_llm_built_on_meta(tiny_experiment: dict, registries) -> None:
    seen = {}

    def lora_like_check(ctx: ValidationContext):
        llm = ctx.meta_llm()
        names = {n.rsplit(".", 1)[-1] for n, _ in llm.named_modules()}
        seen["device"] = next(llm.parameters()).device
        if "q_proj" in names and "nonexistent_proj" not in names:
            yield "training.lora.target_modules: 'nonexistent_proj' matches no module of the LLM"

    cfg = load_config_dict(tiny_experiment, registries)
    with pytest.raises(ConfigError) as info:
        check_experiment(cfg, registries, source="exp.yaml", checks=(*DEFAULT_CHECKS, lora_like_check))
    assert str(info.value) == "exp.yaml: training.lora.target_modules: 'nonexistent_proj' matches no module of the LLM"
    assert seen["device"] == torch.device("meta")


def test_stage_data_sections_are_checked_where_they_are_written(tiny_experiment: dict, registries,
                                                                 tmp_path: Path) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["stages"] = [{"name": "align", "max_steps": 2},
                     {"name": "finetune", "max_steps": 2,
                      "data": {"train": [{"path": str(tmp_path / "sft.jsonl")}], "max_length": 12}}]
    problems = validate_experiment(load_config_dict(exp, registries), registries)
    assert problems == [
        f"stages[1].data.train[0].path: file not found: {tmp_path / 'sft.jsonl'}",
        "stages[1].data.max_length: 12 leaves no room for text: one image becomes up to 16 tokens "
        "(model.image_strategy 'resize' with this encoder and connector); raise it or use fewer tokens per image"]


def test_policies_are_checked_per_stage_on_the_meta_model(tiny_experiment: dict, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["stages"] = [{"name": "align", "max_steps": 2},
                     {"name": "lora", "max_steps": 2, "policy": {"llm": {"type": "lora", "target_modules": ["qproj"]}}}]
    problems = validate_experiment(load_config_dict(exp, registries), registries)
    assert len(problems) == 1
    assert problems[0].startswith("stages[1] (lora): training.policy.llm.target_modules[0]: 'qproj' matches no module")


def test_a_random_init_eva02_is_checked_like_any_other(tiny_experiment: dict, registries) -> None:
    """``pretrained: false`` means random init: the geometry and policy checks build it on the meta device (they
    used to skip it because ``False is not None``)."""
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["vision_encoder"] = {"type": "eva02", "pretrained": False, "architecture": {
        "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}}
    exp["data"]["max_length"] = 16
    exp["training"]["policy"] = {"vision_encoder": {"type": "lora"}}
    cfg = load_config_dict(exp, registries)
    assert not cfg.model.vision_encoder.loads_weights
    problems = validate_experiment(cfg, registries)
    assert problems[0].startswith("data.max_length: 16 leaves no room for text: one image becomes up to 16 tokens")
    assert problems[1].startswith("training.policy.vision_encoder: lora needs a component that wraps a "
                                  "transformers model")
    assert len(problems) == 2
    exp["model"]["vision_encoder"]["pretrained"] = True  # timm's weights: not built before the run
    assert load_config_dict(exp, registries).model.vision_encoder.loads_weights
