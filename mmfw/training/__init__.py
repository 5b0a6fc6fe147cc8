"""Training: stages, per-module policies (frozen / full / LoRA), Accelerate loop, checkpoints and resume, packing.

Import the pieces from their modules (``mmfw.training.trainer.Trainer``, ``mmfw.training.policy.apply_policy``...);
this package module stays free of imports so that light callers (the CLI) do not pay for torch.
"""
