"""``MMFWForConditionalGeneration``: an mmfw model as a transformers ``PreTrainedModel`` with ``generate``.

The module holds the mmfw :class:`~mmfw.model.vlm.VisionLanguageModel` (``self.vlm``) rebuilt from
:class:`~mmfw.hf.configuration.MMFWConfig` through the registries, so any composition (any registered encoder,
connector, LLM and image strategy, plugins included) loads with ``from_pretrained``. The forward pass is mmfw's own:
image features are spliced into the token embeddings at the placeholders (prefill only; later decoding steps read
the KV cache), then the LLM runs.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationMixin, PreTrainedModel

from mmfw.hf.configuration import MMFWConfig

IMAGE_INPUTS = ("pixel_values", "image_sizes", "num_tiles", "image_counts")


class MMFWPreTrainedModel(PreTrainedModel):
    config_class = MMFWConfig
    base_model_prefix = "vlm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Every weight comes from the checkpoint (mmfw's components initialise themselves when built)."""


class MMFWForConditionalGeneration(MMFWPreTrainedModel, GenerationMixin):
    """An exported mmfw vision-language model; ``generate(**processor(images=..., text=...))`` answers."""

    def __init__(self, config: MMFWConfig, vlm: torch.nn.Module | None = None, registries: Any = None) -> None:
        """``vlm``: an already built mmfw model (export); else it is built from ``config.mmfw_model``."""
        super().__init__(config)
        if vlm is None:
            from mmfw.components import default_registries
            from mmfw.model.builder import build_model

            registries = registries or default_registries()
            vlm, _ = build_model(config.model_config(registries), registries, without_tokenizer=True)
            vlm.image_token_id = config.image_token_id
            if torch.get_default_dtype() != torch.float32:  # from_pretrained(..., dtype=...) asked for another dtype
                vlm.to(torch.get_default_dtype())
        self.vlm = vlm
        self.post_init()
        for name, module in self.vlm.named_modules():  # tied weights of the wrapped transformers models
            if isinstance(module, PreTrainedModel) and getattr(module, "all_tied_weights_keys", None):
                prefix = f"vlm.{name}."
                self.all_tied_weights_keys.update(
                    {prefix + k: prefix + v for k, v in module.all_tied_weights_keys.items()})

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``from_pretrained``, then each component recomputes the buffers a checkpoint does not hold
        (the model is built on the meta device, so they would hold whatever memory they got)."""
        out = super().from_pretrained(*args, **kwargs)
        model = out[0] if isinstance(out, tuple) else out
        with torch.no_grad():
            for component in model.vlm.components().values():
                component.init_non_persistent_buffers()
        return out

    @property
    def language_model(self) -> PreTrainedModel:
        return self.vlm.llm.model

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.vlm.llm.get_input_embeddings()

    def get_output_embeddings(self) -> torch.nn.Module | None:
        return self.language_model.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, image_sizes: torch.Tensor | None = None,
                num_tiles: torch.Tensor | None = None, image_counts: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        """mmfw's forward: the LLM on the token embeddings with the image features spliced in."""
        if inputs_embeds is None:
            inputs_embeds, labels = self.vlm.embed(input_ids, labels, pixel_values, image_sizes, num_tiles,
                                                   image_counts)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                                   **kwargs)

    def prepare_inputs_for_generation(self, *args: Any, is_first_iteration: bool | None = False,
                                      **kwargs: Any) -> dict[str, Any]:
        """Image inputs reach only the prefill step; later steps read the image from the KV cache."""
        images = {k: kwargs.pop(k, None) for k in IMAGE_INPUTS}
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs.update(images)
        return inputs
