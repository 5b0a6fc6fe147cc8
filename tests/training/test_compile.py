"""``training.compile``: each component's inner model compiled in place, same loss and gradients, same names."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfw.config import load_config_dict
from mmfw.config.experiment import DatasetSpec
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.model.builder import build_model
from mmfw.training import stage_model
from mmfw.training.loss import supervised_tokens, token_loss_sum


@pytest.fixture(scope="module")
def model_and_batch(registries, tokenizer_dir, synth_data):
    from tests.conftest import TINY_MODEL

    model = copy.deepcopy(TINY_MODEL)
    model["llm"]["tokenizer"] = str(tokenizer_dir)
    cfg = load_config_dict({"model": model, "training": {"max_steps": 1, "compile": True}}, registries)
    torch.manual_seed(0)
    vlm, tok = build_model(cfg.model, registries)
    ds = LlavaDataset([DatasetSpec(path=str(synth_data.eval))], tok, vlm.image_strategy, image_token="<image>",
                      max_length=96)
    return vlm, VLMCollator(tok.pad_token_id)([ds[i] for i in range(4)])


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(**batch.model_inputs(), use_cache=False)
    loss = token_loss_sum(out.logits, batch.labels) / supervised_tokens(batch.labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_compiled_components_train_as_the_eager_ones(model_and_batch) -> None:
    eager, batch = model_and_batch
    compiled = copy.deepcopy(eager)
    slots = stage_model.compile_components(compiled)
    assert slots == [slot for slot, c in compiled.components().items() if c.inner_model() is not None]
    assert "llm" in slots
    for slot in slots:  # compiled in place: the module's calls go through torch.compile
        assert compiled.components()[slot].inner_model()._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their names
    loss_e, grads_e = _loss_and_grads(eager, batch)
    loss_c, grads_c = _loss_and_grads(compiled, batch)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) > 10
    for name, g in grads_e.items():
        torch.testing.assert_close(grads_c[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()) + 1e-7, msg=name)


def test_the_stage_model_is_compiled_only_when_asked(monkeypatch, registries, tokenizer_dir) -> None:
    from tests.conftest import TINY_MODEL

    calls = []
    monkeypatch.setattr(stage_model, "compile_components", lambda model: calls.append(model) or [])
    model = copy.deepcopy(TINY_MODEL)
    model["llm"]["tokenizer"] = str(tokenizer_dir)
    for flag in (False, True):
        cfg = load_config_dict({"model": model, "training": {"max_steps": 1, "compile": flag}}, registries)
        built, _, _ = stage_model.build_stage_model(cfg, registries, cfg.stage_plan()[0], None, None)
        assert len(calls) == int(flag) and (not flag or calls[-1] is built)
