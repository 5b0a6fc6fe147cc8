"""Base classes of every config: strict (unknown keys forbidden) and frozen (never mutated once read).

Part of every component's contract: its config class provides :meth:`ComponentConfig.example`, a tiny, fast,
random-init config. The contract tests (``tests/contract``) build every registered component from it, so a newly
registered component is tested without editing any test, and the component docs show it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from typing_extensions import Self


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, numbers are finite (no inf/nan), values are immutable after
    validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), use_attribute_docstrings=True,
                              allow_inf_nan=False)


class ComponentConfig(StrictModel):
    """Config of a registered component. Subclasses narrow ``type`` to ``Literal["their-name"]``."""

    type: str

    @property
    def loads_weights(self) -> bool:
        """Whether building the component reads pretrained weights (or other files): then validation does not build it
        on the meta device to learn its geometry."""
        return False

    @property
    def runs_remote_code(self) -> bool:
        """Whether loading the component's sources may run code they ship (transformers' ``trust_remote_code``):
        validation then accepts a local directory whose ``config.json`` names its own classes."""
        return False

    def sources(self) -> dict[str, str]:
        """Local paths or hub ids the component reads when it is built, by field name (``{"pretrained": ...}``);
        validation checks that local ones exist before a run starts."""
        return {}

    @classmethod
    def example(cls) -> Self:
        """A tiny, fast, random-init config of this component (no download, well under a second to build and run).

        Used by the contract tests, which are parametrised over every registry entry, and by the docs.
        """
        raise NotImplementedError(
            f"{cls.__name__} does not implement example(); every component config must return a tiny random-init "
            "config used by the contract tests and the docs")


class VisionEncoderConfig(ComponentConfig):
    """Base of vision-encoder configs."""


class ConnectorConfig(ComponentConfig):
    """Base of connector configs."""


class LLMConfig(ComponentConfig):
    """Base of LLM configs."""

    def added_special_tokens(self) -> tuple[str, ...]:
        """Special tokens the LLM component adds to its tokenizer (none unless a config says so)."""
        return ()

    def with_hidden_size(self, hidden_size: int) -> Self | None:
        """A copy of this random-init config whose model is ``hidden_size`` wide, or ``None`` when it has no such
        setting (a pretrained model): the contract kit pairs a width-keeping connector with it."""
        return None

    @classmethod
    def example(cls, tokenizer: str) -> Self:  # type: ignore[override]
        """A tiny random-init config using the tokenizer in directory ``tokenizer`` (an LLM's vocabulary comes from
        its tokenizer, so the tests pass a small offline one)."""
        raise NotImplementedError(
            f"{cls.__name__} does not implement example(tokenizer); every LLM config must return a tiny random-init "
            "config used by the contract tests and the docs")


class ImageStrategyConfig(ComponentConfig):
    """Base of image-strategy configs."""
