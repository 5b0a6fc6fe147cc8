"""The vision-language model: plain composition of encoder, connector, image strategy and LLM.

``pixels -> encoder -> connector -> strategy.merge -> fusion -> LLM``. The model never looks at component names;
everything it needs comes from the component contracts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfw.config.experiment import FusionConfig
from mmfw.config.kinds import KINDS
from mmfw.connectors.base import Connector
from mmfw.encoders.base import VisionEncoder
from mmfw.image_strategies.base import ImageStrategy
from mmfw.llms.base import LanguageModel
from mmfw.model.fusion import IGNORE_INDEX, check_image_markers, splice_image_features


class VisionLanguageModel(nn.Module):
    """A VLM assembled from registered components (see :func:`mmfw.model.builder.build_model`)."""

    def __init__(self, vision_encoder: VisionEncoder, connector: Connector, llm: LanguageModel,
                 image_strategy: ImageStrategy, fusion: FusionConfig, image_token_id: int, *,
                 image_marker_ids: tuple[int, int] | None = None, added_token_ids: tuple[int, ...] = ()) -> None:
        """``image_marker_ids``: the ``(start, end)`` token ids of ``fusion.image_start_token`` / ``image_end_token``;
        ``added_token_ids``: ids of every token mmfw added to the tokenizer (-1 where built without one)."""
        super().__init__()
        self.vision_encoder = vision_encoder
        self.connector = connector
        self.llm = llm
        self.image_strategy = image_strategy
        self.fusion = fusion
        self.image_token_id = image_token_id
        self.image_marker_ids = image_marker_ids
        self.added_token_ids = tuple(added_token_ids)

    def components(self) -> dict[str, nn.Module]:
        """The components by kind key (``vision_encoder``, ``connector``, ...), in :data:`~mmfw.config.kinds.KINDS`
        order."""
        return {k.key: getattr(self, k.key) for k in KINDS}

    def fsdp_block_classes(self) -> set[type[nn.Module]]:
        """The module classes FSDP should wrap one unit each: every component's blocks
        (:meth:`ComponentContract.fsdp_block_classes`), for Accelerate's ``fsdp_transformer_layer_cls_to_wrap``."""
        return set().union(*(c.fsdp_block_classes() for c in self.components().values()))

    def encode_images(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor,
                      num_tiles: torch.Tensor) -> torch.Tensor:
        """``(tiles, 3, H, W)`` tiles of every image -> ``(rows, D)`` feature rows, images in order."""
        if not self.image_strategy.merges_per_image:  # one reshape for all images
            tokens = self._tile_tokens(pixel_values)
            return tokens.reshape(-1, tokens.shape[-1])
        return torch.cat(self.encode_images_split(pixel_values, image_sizes, num_tiles))

    def _tile_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.vision_encoder(pixel_values)
        grid = self.vision_encoder.spec.grid(pixel_values.shape[-2], pixel_values.shape[-1])
        return self.connector(features, grid)

    def encode_images_split(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor,
                            num_tiles: torch.Tensor) -> list[torch.Tensor]:
        """Like :meth:`encode_images`, one ``(rows_i, D)`` tensor per image."""
        tokens = self._tile_tokens(pixel_values)
        per_image = torch.split(tokens, num_tiles.tolist())
        if not self.image_strategy.merges_per_image:
            return [t.reshape(-1, t.shape[-1]) for t in per_image]
        sizes = [tuple(s) for s in image_sizes.tolist()]
        return [self.image_strategy.merge(t, size) for t, size in zip(per_image, sizes, strict=True)]

    def _dummy_image_term(self, like: torch.Tensor) -> torch.Tensor | None:
        """0 x (features of a blank tile): keeps trainable vision-path parameters in the graph for text-only batches."""
        if not self.fusion.dummy_image_for_text_only or not torch.is_grad_enabled():
            return None
        vision_path = (self.vision_encoder, self.connector, self.image_strategy)
        if not any(p.requires_grad for m in vision_path for p in m.parameters()):
            return None
        h, w = self.vision_encoder.spec.image_size
        blank = torch.zeros(1, 3, h, w, device=like.device, dtype=self.vision_encoder.dtype)
        size = torch.tensor([[w, h]], device=like.device)
        feats = self.encode_images(blank, size, torch.ones(1, dtype=torch.long))
        extra = sum(p.sum() for p in self.image_strategy.parameters() if p.requires_grad)
        return (feats.sum() + extra).to(like.dtype) * 0.0

    def embed(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
              pixel_values: torch.Tensor | None = None, image_sizes: torch.Tensor | None = None,
              num_tiles: torch.Tensor | None = None, image_counts: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings with image features spliced in (and labels masked at image positions).

        ``image_counts`` (images per row of ``input_ids``), when given, lets the fusion check every row's placeholder
        count against the feature rows of that row's own images, not only the batch totals.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        rows_per_sample = None
        has_images = pixel_values is not None and pixel_values.shape[0] > 0
        if has_images and image_counts is None and self.image_marker_ids is None:
            features = self.encode_images(pixel_values, image_sizes, num_tiles)
        elif has_images:
            per_image = self.encode_images_split(pixel_values, image_sizes, num_tiles)
            features = torch.cat(per_image)
            rows = torch.tensor([f.shape[0] for f in per_image], dtype=torch.long)
            if self.image_marker_ids is not None:
                check_image_markers(input_ids, self.image_token_id, *self.image_marker_ids, rows.tolist())
            if image_counts is not None:
                owner = torch.repeat_interleave(torch.arange(len(image_counts)), image_counts.cpu())
                rows_per_sample = torch.zeros(len(image_counts), dtype=torch.long).index_add_(0, owner, rows)
        else:
            if self.image_marker_ids is not None:
                check_image_markers(input_ids, self.image_token_id, *self.image_marker_ids, [])
            features = embeds.new_zeros(0, embeds.shape[-1])
            dummy = self._dummy_image_term(embeds)
            if dummy is not None:
                embeds = embeds + dummy
        if labels is not None and self.image_marker_ids is not None:
            labels = labels.masked_fill(torch.isin(input_ids, torch.tensor(self.image_marker_ids,
                                                                          device=input_ids.device)), IGNORE_INDEX)
        return splice_image_features(embeds, input_ids, self.image_token_id, features, labels,
                                     rows_per_sample=rows_per_sample)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                image_sizes: torch.Tensor | None = None, num_tiles: torch.Tensor | None = None,
                image_counts: torch.Tensor | None = None, **llm_kwargs: Any) -> Any:
        embeds, labels = self.embed(input_ids, labels, pixel_values, image_sizes, num_tiles, image_counts)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **llm_kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, image_sizes: torch.Tensor | None = None,
                 num_tiles: torch.Tensor | None = None, image_counts: torch.Tensor | None = None,
                 **generate_kwargs: Any) -> torch.Tensor:
        """Generate with the KV cache; the vision encoder runs once. Returns only the new token ids.

        Batched prompts must be left-padded.
        """
        embeds, _ = self.embed(input_ids, None, pixel_values, image_sizes, num_tiles, image_counts)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)
