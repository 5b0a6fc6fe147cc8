"""Python inference API: load a trained run and answer questions about images.

    >>> vlm = load_pipeline("runs/quickstart")
    >>> vlm.generate("data/synth/images/eval_000001.png", "What color is the shape?")
    'red'

The image is preprocessed by the run's own image strategy (so the token count matches training) and the vision
encoder runs once per ``generate``; decoding uses the LLM's KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from mmfw.components import Registries
from mmfw.config import ExperimentConfig
from mmfw.data.collator import VLMCollator
from mmfw.data.images import load_image, to_rgb
from mmfw.data.tokenize import encode_prompt
from mmfw.model.io import load_model_dir
from mmfw.model.vlm import VisionLanguageModel

if TYPE_CHECKING:
    from mmfw.chat import Conversation

ImageLike = str | Path | Image.Image


class VLMPipeline:
    """A loaded model with its tokenizer and config, ready to generate."""

    def __init__(self, model: VisionLanguageModel, tokenizer: Any, cfg: ExperimentConfig,
                 device: str | torch.device = "cpu") -> None:
        self.model, self.tokenizer, self.cfg = model.eval(), tokenizer, cfg
        self.device = torch.device(device)
        self.collator = VLMCollator(tokenizer.pad_token_id, padding_side="left")

    def prepare(self, images: Sequence[ImageLike], prompt: str) -> dict[str, Any]:
        """One prompt's model inputs. ``<image>`` placeholders are added in front if the prompt has none."""
        token = self.cfg.model.fusion.image_token
        pils = [to_rgb(im) if isinstance(im, Image.Image) else load_image(im) for im in images]
        if pils and token not in prompt:
            prompt = "\n".join([token] * len(pils) + [prompt])
        inputs = [self.model.image_strategy.preprocess(im) for im in pils]
        counts = [self.model.image_strategy.num_tokens(x.size) for x in inputs]
        ids = encode_prompt([{"role": "user", "content": prompt}], self.tokenizer, image_token=token,
                            image_token_counts=counts, system_prompt=self.cfg.data.system_prompt,
                            image_markers=self.cfg.model.fusion.image_markers)
        ids_t = torch.tensor(ids, dtype=torch.long)
        return {"input_ids": ids_t, "labels": torch.full_like(ids_t, -100), "images": inputs}

    @torch.no_grad()
    def generate_batch(self, items: Sequence[tuple[Sequence[ImageLike], str]], max_new_tokens: int = 32,
                       **generate_kwargs: Any) -> list[str]:
        """Answers (new text only) for ``(images, prompt)`` pairs, batched with left padding."""
        batch = self.collator([self.prepare(images, prompt) for images, prompt in items]).to(self.device)
        generate_kwargs.setdefault("do_sample", False)
        new = self.model.generate(**batch.model_inputs(), max_new_tokens=max_new_tokens, **generate_kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def generate(self, image: ImageLike | Sequence[ImageLike] | None, prompt: str, max_new_tokens: int = 32,
                 **generate_kwargs: Any) -> str:
        images = [] if image is None else [image] if isinstance(image, str | Path | Image.Image) else list(image)
        return self.generate_batch([(images, prompt)], max_new_tokens, **generate_kwargs)[0]

    def chat(self, image: ImageLike | Sequence[ImageLike] | None = None, **kwargs: Any) -> Conversation:
        """A multi-turn :class:`~mmfw.chat.Conversation` (optionally showing ``image`` with the first turn); each
        image is encoded once and the KV cache is kept between turns."""
        from mmfw.chat import Conversation

        conversation = Conversation(self, **kwargs)
        images = [] if image is None else [image] if isinstance(image, str | Path | Image.Image) else list(image)
        for im in images:
            conversation.add_image(im)
        return conversation


def load_pipeline(path: str | Path, registries: Registries | None = None,
                  device: str | torch.device = "cpu") -> VLMPipeline:
    """Load a run directory (its final model) or a checkpoint directory."""
    model, tokenizer, cfg = load_model_dir(path, registries, device)
    return VLMPipeline(model, tokenizer, cfg, device)
