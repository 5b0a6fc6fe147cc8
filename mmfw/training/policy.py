"""Per-module training policy: which parts of the VLM are trained."""

from __future__ import annotations

import logging

from torch import nn

from mmfw.config.experiment import PolicyConfig

logger = logging.getLogger(__name__)


def apply_policy(model: nn.Module, policy: PolicyConfig) -> dict[str, int]:
    """Set ``requires_grad`` per top-level module; returns trainable parameter counts per module."""
    counts = {}
    for name, mode in policy.model_dump().items():
        module = getattr(model, name)
        for p in module.parameters():
            p.requires_grad_(mode == "full")
        counts[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    logger.info("trainable parameters: %s", counts)
    return counts
