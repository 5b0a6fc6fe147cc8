"""The configs of the transformers causal LMs (:class:`~mmfw.llms.base.HFCausalLM` families): where the weights or
the architecture come from, the tokenizer and chat template, and the special tokens added to it.

Pydantic only (no torch), so a config reads cheaply; :mod:`mmfw.llms.base` re-exports both classes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from typing_extensions import Self

from mmfw.config.base import LLMConfig, StrictModel
from mmfw.specs import DType

__all__ = ["CausalLMArchitecture", "HFCausalLMConfig"]


class CausalLMArchitecture(StrictModel):
    """Architecture of a decoder-only LM trained from scratch (fields common to Llama, Mistral, Qwen2...)."""

    hidden_size: int = Field(4096, gt=0)
    intermediate_size: int = Field(11008, gt=0)
    num_hidden_layers: int = Field(32, gt=0)
    num_attention_heads: int = Field(32, gt=0)
    num_key_value_heads: int | None = Field(None, gt=0)
    head_dim: int | None = Field(None, gt=0)
    max_position_embeddings: int = Field(4096, gt=0)
    vocab_size: int | None = Field(None, gt=0)
    """Defaults to the tokenizer's length."""
    rope_theta: float | None = None
    tie_word_embeddings: bool = False
    extra: dict[str, Any] = {}
    """Further fields of the transformers config class (checked against it)."""

    @model_validator(mode="after")
    def _heads(self) -> CausalLMArchitecture:
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        kv = self.num_key_value_heads or self.num_attention_heads
        if self.num_attention_heads % kv:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {kv}")
        return self


class HFCausalLMConfig(LLMConfig):
    """Config shared by every transformers causal LM (the :class:`HFCausalLM` components)."""

    pretrained: str | None = None
    """Local directory or hub id passed to ``from_pretrained``."""
    architecture: CausalLMArchitecture | None = None
    """Random initialisation from this architecture when ``pretrained`` is not set."""
    tokenizer: str | None = None
    """Tokenizer directory or hub id; defaults to ``pretrained``."""
    chat_template: str | None = None
    """Jinja chat template overriding the tokenizer's own."""
    dtype: DType = "float32"
    attn_implementation: Literal["eager", "sdpa", "sdpa_varlen", "flash_attention_2"] = "sdpa_varlen"
    """``sdpa_varlen`` (the default): ``sdpa`` that attends within each sample of a packed row only, instead of over
    the whole row under a block-diagonal mask (:mod:`mmfw.llms.attention`); padded batches and generation run plain
    ``sdpa``. Exported checkpoints name no attention implementation (transformers picks its default)."""
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    extra_special_tokens: tuple[str, ...] = ()
    """Special tokens added to the tokenizer (e.g. OmniLMM's ``<im_start>``, ``<im_patch>``, ``<im_end>``); embedding
    rows of tokens new to the model are initialised to the mean of the existing rows (input and output embeddings)."""

    def added_special_tokens(self) -> tuple[str, ...]:
        return self.extra_special_tokens

    @field_validator("extra_special_tokens")
    @classmethod
    def _distinct_tokens(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not t for t in v):
            raise ValueError("special tokens must be non-empty strings")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate special tokens in {list(v)}")
        return v

    @property
    def runs_remote_code(self) -> bool:
        return self.trust_remote_code

    @property
    def loads_weights(self) -> bool:
        return self.pretrained is not None

    def sources(self) -> dict[str, str]:
        return {k: v for k, v in (("pretrained", self.pretrained), ("tokenizer", self.tokenizer)) if v is not None}

    def with_hidden_size(self, hidden_size: int) -> Self | None:
        if self.architecture is None:
            return None
        arch = self.architecture.model_copy(update={"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size})
        return self.model_copy(update={"architecture": arch})

    @classmethod
    def example(cls, tokenizer: str) -> Self:
        """One tiny decoder layer (hidden 48, 4 query / 2 key-value heads) over the given tokenizer; shared by every
        transformers family whose config takes the :class:`CausalLMArchitecture` fields."""
        return cls(tokenizer=tokenizer, architecture=CausalLMArchitecture(
            hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
            head_dim=12, max_position_embeddings=256))

    @model_validator(mode="after")
    def _source(self) -> HFCausalLMConfig:
        if (self.pretrained is None) == (self.architecture is None):
            raise ValueError("set exactly one of 'pretrained' (weights) and 'architecture' (random init)")
        if self.tokenizer is None and self.pretrained is None:
            raise ValueError("'tokenizer' is required when the LLM is built from an architecture")
        return self
