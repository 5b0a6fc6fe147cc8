"""``training.policy.new_token_embeddings``: only the embedding rows of mmfw's added tokens train; every original
row stays bit-identical under the project's optimizer (AdamW with weight decay, clipping, accumulation)."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfw.config import ConfigError, load_config_dict
from mmfw.config.training import PolicyConfig, TrainingConfig
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import build_dataset
from mmfw.model.builder import build_model
from mmfw.training.loss import IGNORE_INDEX
from mmfw.training.optim import build_optimizer
from mmfw.training.policy import apply_policy, trainable_parameter_counts


@pytest.fixture
def setup(tiny_experiment, registries):
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["fusion"] = {"image_start_token": "<im_start>", "image_end_token": "<im_end>"}
    exp["model"]["llm"]["extra_special_tokens"] = ["<im_patch>"]
    cfg = load_config_dict(exp, registries)
    torch.manual_seed(0)
    model, tok = build_model(cfg.model, registries)
    ds = build_dataset(cfg.data.train, cfg.data, tok, model.image_strategy, image_token=cfg.model.fusion.image_token,
                       image_markers=cfg.model.fusion.image_markers)
    batches = [VLMCollator(tok.pad_token_id)([ds[i] for i in range(b, b + 4)]) for b in (0, 4, 8)]
    return cfg, model, tok, batches


def _train(model, applied, batches, steps: int = 3, accumulation: int = 2) -> None:
    t = TrainingConfig(max_steps=steps, learning_rate=1e-2, weight_decay=0.1)
    opt = build_optimizer(model, t, applied.lr_scale, applied.decays)
    for step in range(steps):
        for k in range(accumulation):
            batch = batches[(step * accumulation + k) % len(batches)]
            labels = batch.labels.masked_fill(batch.input_ids == model.image_token_id, IGNORE_INDEX)
            loss = model(**batch.model_inputs(), labels=labels).loss / accumulation
            loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.max_grad_norm)
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("llm_policy", ["frozen", {"type": "lora", "r": 2, "target_modules": ["q_proj", "v_proj"]}])
def test_only_new_rows_change(setup, llm_policy) -> None:
    cfg, model, tok, batches = setup
    ids = sorted(model.added_token_ids)
    assert {tok.convert_ids_to_tokens(i) for i in ids} == {"<image>", "<im_start>", "<im_end>", "<im_patch>"}
    before = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    policy = PolicyConfig.model_validate({"vision_encoder": "frozen", "llm": llm_policy,
                                          "new_token_embeddings": True})
    applied = apply_policy(model, policy)
    _train(model, applied, batches)
    emb_name, head_name = "model.model.embed_tokens.weight", "model.lm_head.weight"
    after = {n.replace("base_model.model.", ""): p.detach() for n, p in model.llm.named_parameters()}
    rows = torch.zeros(len(tok), dtype=torch.bool)
    rows[ids] = True
    for name in (emb_name, head_name):
        assert torch.equal(after[name][~rows], before[name][~rows]), f"{name}: an original row changed"
    start, end = model.image_marker_ids
    for tid in (start, end):  # the markers are in every sample's input: their input rows learned
        assert not torch.equal(after[emb_name][tid], before[emb_name][tid])
    assert not torch.equal(after[head_name][rows], before[head_name][rows])
    if llm_policy == "frozen":  # nothing else in the LLM moved
        changed = [n for n in before if n not in (emb_name, head_name) and not torch.equal(after[n], before[n])]
        assert changed == []
    hidden = model.llm.hidden_size
    assert applied.counts["llm"] - (0 if llm_policy == "frozen" else _lora(model)) == 2 * len(ids) * hidden


def _lora(model) -> int:
    return sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)


def test_inspect_counts_equal_the_applied_counts(setup, registries) -> None:
    cfg, model, _, _ = setup
    policy = PolicyConfig.model_validate({"vision_encoder": "frozen", "llm": "frozen", "new_token_embeddings": True})
    with torch.device("meta"):
        meta, _ = build_model(cfg.model, registries, without_tokenizer=False)
    predicted = trainable_parameter_counts(meta, policy)
    applied = apply_policy(model, policy)
    assert predicted == applied.counts
    assert predicted["llm"] == 2 * 4 * model.llm.hidden_size


def test_weight_decay_is_off_for_masked_embeddings(setup) -> None:
    _, model, _, _ = setup
    applied = apply_policy(model, PolicyConfig.model_validate({"llm": "frozen", "new_token_embeddings": True}))
    opt = build_optimizer(model, TrainingConfig(max_steps=1, weight_decay=0.1), applied.lr_scale, applied.decays)
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd_of[id(model.llm.get_input_embeddings().weight)] == 0.0
    assert wd_of[id(model.llm.get_output_embeddings().weight)] == 0.0
    assert 0.1 in wd_of.values()  # other matrices still decay


def test_full_llm_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="new_token_embeddings: llm 'full' already trains every embedding row"):
        PolicyConfig.model_validate({"llm": "full", "new_token_embeddings": True})


def test_embeddings_trained_by_another_policy_are_refused(setup) -> None:
    _, model, _, _ = setup
    policy = PolicyConfig.model_validate({"llm": "frozen", "new_token_embeddings": True,
                                          "modules": {"llm.model.lm_head": "full"}})
    with pytest.raises(ConfigError, match="already trained in full"):
        apply_policy(model, policy)


def test_mmfw_inspect_counts_rows_and_budgets_the_masked_state(setup, registries) -> None:
    from mmfw.inspection import inspect_config, memory_estimate

    cfg, model, tok, _ = setup
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"policy": PolicyConfig.model_validate(
        {"vision_encoder": "frozen", "connector": "frozen", "llm": "frozen", "image_strategy": "frozen",
         "new_token_embeddings": True})})})
    report = inspect_config(cfg, registries)
    hidden = model.llm.hidden_size
    assert report["params"]["trainable"] == report["params"]["trainable_by_module"]["llm"] == 2 * 4 * hidden
    masked = 2 * len(tok) * hidden - 2 * 4 * hidden
    assert report["memory_bytes"] == memory_estimate(report["params"]["total"], 2 * 4 * hidden + masked)
