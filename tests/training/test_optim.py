"""The optimizer: fused AdamW by default, the same updates as the plain implementation."""

from __future__ import annotations

import copy

import torch

from mmfw.config.training import TrainingConfig
from mmfw.training.optim import build_optimizer


def _train(model: torch.nn.Module, fused: bool, steps: int = 5) -> torch.optim.Optimizer:
    torch.manual_seed(1)
    opt = build_optimizer(model, TrainingConfig(max_steps=1, learning_rate=1e-2, weight_decay=0.1,
                                                fused_optimizer=fused))
    for _ in range(steps):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt


def test_fused_adamw_is_the_default_and_updates_as_the_plain_one() -> None:
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    plain_model, initial = copy.deepcopy(fused_model), copy.deepcopy(fused_model)
    assert TrainingConfig(max_steps=1).fused_optimizer
    fused, plain = _train(fused_model, True), _train(plain_model, False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for (name, a), b, start in zip(fused_model.named_parameters(), plain_model.parameters(), initial.parameters(),
                                   strict=True):
        assert (a - start).abs().max() > 1e-3, name  # trained
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # a state dict of one loads into the other (a run resumed with the setting changed)
    plain.load_state_dict(fused.state_dict())
    assert plain.state_dict()["state"][0]["exp_avg"].equal(fused.state_dict()["state"][0]["exp_avg"])
