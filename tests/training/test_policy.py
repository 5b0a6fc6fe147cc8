"""Per-module policies: what is trained (counted without touching the model, then applied), LoRA targets checked
against the model, last-N-blocks unfreezing, sub-module overrides, learning-rate multipliers, gradient
checkpointing that changes memory but not the gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfw.config import ConfigError, load_config_dict
from mmfw.config.training import PolicyConfig, TrainingConfig
from mmfw.model.builder import build_model
from mmfw.training.optim import build_optimizer
from mmfw.training.policy import apply_policy, trainable_parameter_counts
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def model_cfg(registries, tokenizer_dir):
    model = copy.deepcopy(TINY_MODEL)
    model["llm"]["tokenizer"] = str(tokenizer_dir)
    return load_config_dict({"model": model, "training": {"max_steps": 1}}, registries).model


@pytest.fixture
def vlm(model_cfg, registries):
    torch.manual_seed(0)
    return build_model(model_cfg, registries)[0]


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


POLICIES = {
    "align": {"vision_encoder": "frozen", "connector": "full", "llm": "frozen"},
    "lora": {"llm": {"type": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]}},
    "lora-all-linear+head": {"llm": {"type": "lora", "r": 2}, "modules": {"llm.model.lm_head": "full"}},
    "last-block": {"vision_encoder": {"type": "frozen", "unfreeze_last_blocks": 1}, "llm": "frozen"},
    "everything": {"vision_encoder": "full", "connector": "full", "llm": "full"},
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_counted_trainable_parameters_match_the_applied_policy(vlm, name) -> None:
    policy = PolicyConfig.model_validate(POLICIES[name])
    counted = trainable_parameter_counts(vlm, policy)
    applied = apply_policy(vlm, policy)
    assert counted == applied.counts
    assert counted["total"] == sum(p.numel() for p in vlm.parameters() if p.requires_grad)


def test_trainable_counts_have_the_expected_values(vlm) -> None:
    connector = _numel(vlm.connector)
    align = trainable_parameter_counts(vlm, PolicyConfig.model_validate(POLICIES["align"]))
    assert align == {"vision_encoder": 0, "connector": connector, "llm": 0, "image_strategy": 0, "total": connector}
    lora = trainable_parameter_counts(vlm, PolicyConfig.model_validate(POLICIES["lora"]))
    cfg = vlm.llm.model.config
    kv = cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    per_layer = 4 * (cfg.hidden_size + cfg.hidden_size) + 4 * (cfg.hidden_size + kv)  # q_proj and v_proj, r=4
    assert lora["llm"] == cfg.num_hidden_layers * per_layer
    last = trainable_parameter_counts(vlm, PolicyConfig.model_validate(POLICIES["last-block"]))
    assert last["vision_encoder"] == _numel(vlm.vision_encoder.layer_groups()[-1])


def test_lora_target_that_matches_nothing_is_a_config_error_naming_the_key(vlm) -> None:
    policy = PolicyConfig.model_validate({"llm": {"type": "lora", "target_modules": ["q_proj", "qkv"]}})
    for call in (lambda: trainable_parameter_counts(vlm, policy), lambda: apply_policy(vlm, policy, "stages[1].policy")):
        with pytest.raises(ConfigError) as err:
            call()
        assert "policy.llm.target_modules[1]: 'qkv' matches no module" in str(err.value)
        assert "q_proj" in str(err.value)  # and says what could be targeted
    with pytest.raises(ConfigError, match=r"stages\[1\].policy.connector: lora needs a component that wraps"):
        apply_policy(vlm, PolicyConfig.model_validate({"connector": "lora"}), "stages[1].policy")
    with pytest.raises(ConfigError, match="training.policy.modules.llm.model.head: no such sub-module"):
        trainable_parameter_counts(vlm, PolicyConfig.model_validate({"modules": {"llm.model.head": "full"}}))


def test_unfreeze_last_blocks_and_module_override(vlm) -> None:
    policy = PolicyConfig.model_validate({"vision_encoder": {"type": "frozen", "unfreeze_last_blocks": 1},
                                          "llm": "frozen", "modules": {"llm.model.lm_head": "full"}})
    apply_policy(vlm, policy)
    blocks = vlm.vision_encoder.layer_groups()
    assert all(p.requires_grad for p in blocks[-1].parameters())
    assert not any(p.requires_grad for b in blocks[:-1] for p in b.parameters())
    trainable_llm = {n for n, p in vlm.llm.named_parameters() if p.requires_grad}
    assert trainable_llm == {"model.lm_head.weight"}


def test_learning_rate_multipliers_become_parameter_groups(vlm) -> None:
    policy = PolicyConfig.model_validate({"vision_encoder": {"type": "full", "lr_scale": 0.1},
                                          "llm": {"type": "lora", "r": 2, "lr_scale": 2.0}})
    applied = apply_policy(vlm, policy)
    opt = build_optimizer(vlm, TrainingConfig(max_steps=1, learning_rate=1e-3, weight_decay=0.1), applied.lr_scale)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    enc = next(p for p in vlm.vision_encoder.parameters() if p.ndim == 2)
    lora = next(p for n, p in vlm.llm.named_parameters() if "lora_A" in n)
    conn_bias = next(p for n, p in vlm.connector.named_parameters() if n.endswith("bias"))
    assert lr_of[id(enc)] == pytest.approx(1e-4) and lr_of[id(lora)] == pytest.approx(2e-3)
    assert lr_of[id(conn_bias)] == pytest.approx(1e-3) and wd_of[id(conn_bias)] == 0.0 and wd_of[id(enc)] == 0.1
    assert len(lr_of) == sum(1 for p in vlm.parameters() if p.requires_grad)


def test_gradient_checkpointing_gives_the_same_gradients(model_cfg, registries, synth_data) -> None:
    from mmfw.config.experiment import DatasetSpec
    from mmfw.data.collator import VLMCollator
    from mmfw.data.dataset import LlavaDataset

    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        vlm, tok = build_model(model_cfg, registries)
        policy = {name: {"type": "full", "gradient_checkpointing": checkpointing}
                  for name in ("vision_encoder", "llm")}
        apply_policy(vlm, PolicyConfig.model_validate(policy))
        assert vlm.llm.model.is_activation_checkpointing == checkpointing
        assert vlm.vision_encoder.model.is_activation_checkpointing == checkpointing
        ds = LlavaDataset([DatasetSpec(path=str(synth_data.eval))], tok, vlm.image_strategy, image_token="<image>",
                          max_length=96)
        batch = VLMCollator(tok.pad_token_id)([ds[i] for i in range(3)])
        vlm.train()
        vlm(**batch.model_inputs(labels=True)).loss.backward()
        grads.append({n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5)


def test_a_bad_lora_target_in_a_later_stage_fails_before_anything_trains(experiment, registries) -> None:
    from mmfw.training.trainer import Trainer

    experiment["stages"] = [
        {"name": "align", "policy": {"llm": "frozen"}},
        {"name": "finetune", "policy": {"llm": {"type": "lora", "target_modules": ["q_proj", "qkv"]}}},
    ]
    cfg = load_config_dict(experiment, registries)
    with pytest.raises(ConfigError, match=r"stages\[1\].policy.llm.target_modules\[1\]: 'qkv' matches no module"):
        Trainer(cfg, registries, progress=False).train()
    assert not (cfg.run_dir / "stages").exists()


def _bad_second_stage(experiment):
    experiment["stages"] = [
        {"name": "align", "policy": {"llm": "frozen"}},
        {"name": "finetune", "policy": {"llm": {"type": "lora", "target_modules": ["q_proj", "qkv"]}}},
    ]
    return experiment


def test_the_policy_pre_check_reuses_the_model_validation_built(experiment, registries, monkeypatch) -> None:
    import mmfw.model.builder
    from mmfw.training.policy import check_stage_policies
    from mmfw.training.validate import ValidationContext

    cfg = load_config_dict(_bad_second_stage(experiment), registries)
    model = ValidationContext(cfg, registries).meta_model()
    assert model is not None

    def no_build(*args, **kwargs):
        raise AssertionError("the pre-check built the model again")

    monkeypatch.setattr(mmfw.model.builder, "build_model", no_build)
    with pytest.raises(ConfigError, match=r"stages\[1\].policy.llm.target_modules\[1\]: 'qkv' matches no module"):
        check_stage_policies(cfg, registries, model)


def test_mmfw_train_builds_the_model_on_the_meta_device_once(experiment, tmp_path, monkeypatch, caplog) -> None:
    """Validation builds it; the trainer's policy pre-check counts each stage's parameters on that same model."""
    from mmfw.cli.main import main
    from mmfw.model.vlm import VisionLanguageModel
    from tests.training.conftest import write_config

    devices = []
    init = VisionLanguageModel.__init__

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        devices.append(next(self.parameters()).device.type)

    monkeypatch.setattr(VisionLanguageModel, "__init__", counting_init)
    experiment["training"]["max_steps"] = 1
    with caplog.at_level("INFO", logger="mmfw.training.policy"):
        assert main(["-q", "train", str(write_config(experiment, tmp_path / "exp.yaml")), "--no-progress"]) == 0
    assert devices == ["meta", "cpu"]  # validation's (and the pre-check's), then the stage's model
    assert "stage 'train' trains" in caplog.text
