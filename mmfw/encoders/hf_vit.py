"""The shared base of transformers ViT vision towers (``clip``, ``siglip``), as :class:`~mmfw.llms.base.HFCausalLM` is
for the LLM families.

A tower is loaded with ``from_pretrained`` (local directory or hub id) or initialised at random from an
``architecture``. Features are the hidden states of ``feature_layer`` (the penultimate layer by default); the layers
after it and the post-layernorm never influence the output, so they are removed (no wasted compute, and no parameter
without a gradient, which DDP would reject). A family names its transformers classes and what it does differently
(prefix tokens, extra heads, position-embedding interpolation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import model_validator

from mmfw.config.base import VisionEncoderConfig
from mmfw.config.input_checks import load_located
from mmfw.encoders.base import DType, VisionEncoder, VisionSpec, torch_dtype

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["HFViTEncoder", "HFViTEncoderConfig"]


class HFViTEncoderConfig(VisionEncoderConfig):
    """Config shared by the transformers ViT towers. Subclasses narrow ``architecture`` to their own class."""

    pretrained: str | None = None
    """Local directory or hub id of a checkpoint of the family (the whole model or its vision tower)."""
    architecture: Any = None
    """Random initialisation from this architecture when ``pretrained`` is not set."""
    feature_layer: int = -2
    """Index into the hidden states (0 = embeddings, -1 = last layer)."""
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    dtype: DType = "float32"

    @property
    def loads_weights(self) -> bool:
        return self.pretrained is not None

    def sources(self) -> dict[str, str]:
        return {} if self.pretrained is None else {"pretrained": self.pretrained}

    @model_validator(mode="after")
    def _source(self) -> HFViTEncoderConfig:
        if (self.pretrained is None) == (self.architecture is None):
            raise ValueError("set exactly one of 'pretrained' (weights) and 'architecture' (random init)")
        if self.architecture is not None:
            layers = self.architecture.num_hidden_layers
            if not -layers - 1 <= self.feature_layer <= layers:
                raise ValueError(f"feature_layer {self.feature_layer} out of range for {layers} layers")
        return self


class HFViTEncoder(VisionEncoder):
    """A transformers ViT tower cut at ``feature_layer``; subclasses name the transformers classes."""

    hf_config_class: ClassVar[type[PretrainedConfig]]
    hf_model_class: ClassVar[type[PreTrainedModel]]
    cfg: HFViTEncoderConfig

    def __init__(self, cfg: HFViTEncoderConfig) -> None:
        super().__init__(cfg)
        dtype = torch_dtype(cfg.dtype)
        if cfg.pretrained is not None:
            self.model = load_located("model.vision_encoder.pretrained", cfg.pretrained,
                                      self.hf_model_class.from_pretrained, cfg.pretrained, dtype=dtype)
        else:
            self.model = self.hf_model_class(self.architecture_config(cfg)).to(dtype)
        mc = self.model.config
        layers = mc.num_hidden_layers
        if not -layers - 1 <= cfg.feature_layer <= layers:
            raise ValueError(f"feature_layer {cfg.feature_layer} out of range for {layers} layers")
        keep = cfg.feature_layer % (layers + 1)
        tower = self.tower
        tower.encoder.layers = tower.encoder.layers[:keep]
        tower.post_layernorm = torch.nn.Identity()
        self.num_layers_kept = keep
        self._spec = VisionSpec(image_size=(mc.image_size, mc.image_size), patch_size=mc.patch_size,
                                mean=cfg.image_mean, std=cfg.image_std, embed_dim=mc.hidden_size,
                                dynamic_size=self.dynamic_size)

    @classmethod
    def architecture_config(cls, cfg: HFViTEncoderConfig) -> PretrainedConfig:
        """The transformers config of a random-init tower."""
        return cls.hf_config_class(**cfg.architecture.model_dump())

    @property
    def dynamic_size(self) -> bool:
        """Whether inputs other than the native size are accepted (see :attr:`VisionSpec.dynamic_size`)."""
        return False

    @property
    def spec(self) -> VisionSpec:
        return self._spec

    @property
    def tower(self) -> torch.nn.Module:
        """The vision transformer (the ``...VisionModel`` itself in transformers v5, ``.vision_model`` before)."""
        return getattr(self.model, "vision_model", self.model)

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self.tower.encoder.layers)

    def inner_model(self) -> torch.nn.Module:
        return self.model

    def replace_inner_model(self, module: torch.nn.Module) -> None:
        self.model = module
