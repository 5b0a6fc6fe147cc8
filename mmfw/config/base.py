"""Base classes of every config: strict (unknown keys forbidden) and frozen (never mutated once read)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ComponentConfig(StrictModel):
    """Config of a registered component. Subclasses narrow ``type`` to ``Literal["their-name"]``."""

    type: str


class VisionEncoderConfig(ComponentConfig):
    """Base of vision-encoder configs."""


class ConnectorConfig(ComponentConfig):
    """Base of connector configs."""


class LLMConfig(ComponentConfig):
    """Base of LLM configs."""


class ImageStrategyConfig(ComponentConfig):
    """Base of image-strategy configs."""
