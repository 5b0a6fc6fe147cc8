"""The contracts, one module per kind (configs and whole-model checks apply to every kind)."""

from mmfw.testing.checks import configs, connectors, encoders, image_strategies, llms, vlm

__all__ = ["configs", "connectors", "encoders", "image_strategies", "llms", "vlm"]
