"""``MMFWImageProcessor`` and ``MMFWProcessor``: mmfw's image strategy and tokenizer as a transformers processor.

The image processor rebuilds the run's image strategy from the mmfw model config it stores (on the meta device: no
weights), so pixels, tiles and token counts are exactly those of training, whatever the strategy. The processor
expands each ``<image>`` placeholder of the (chat-templated) text into the strategy's token count for that image,
and :meth:`MMFWProcessor.apply_chat_template` renders transformers-style messages (``{"type": "image"}`` /
``{"type": "text"}`` content parts) with the run's chat template and system prompt, as ``mmfw generate`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor


def _model_config(mmfw_model: dict[str, Any], registries: Any = None) -> Any:
    from mmfw.components import default_registries
    from mmfw.config import load_config_dict

    registries = registries or default_registries()
    return load_config_dict({"model": mmfw_model, "training": {"max_steps": 1}}, registries,
                            source="mmfw_model").model, registries


class MMFWImageProcessor(BaseImageProcessor):
    """Images -> ``pixel_values`` (every tile), ``image_sizes`` and ``num_tiles``, by the run's image strategy."""

    model_input_names = ["pixel_values", "image_sizes", "num_tiles"]

    def __init__(self, mmfw_model: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mmfw_model = mmfw_model
        self._strategy = None

    @property
    def strategy(self) -> Any:
        """The run's image strategy (built once, on the meta device)."""
        if self._strategy is None:
            from mmfw.model.builder import build_model

            if self.mmfw_model is None:
                raise ValueError("MMFWImageProcessor has no mmfw_model (write it with `mmfw export --format hf`)")
            cfg, registries = _model_config(self.mmfw_model)
            with torch.device("meta"):
                model, _ = build_model(cfg, registries, without_tokenizer=True)
            self._strategy = model.image_strategy
        return self._strategy

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_strategy", None)
        return out

    def image_inputs(self, images: Image.Image | Sequence[Image.Image]) -> list[Any]:
        """mmfw's :class:`~mmfw.image_strategies.base.ImageInput` of each image (RGB converted)."""
        from mmfw.data.images import to_rgb

        images = [images] if isinstance(images, Image.Image) else list(images)
        return [self.strategy.preprocess(to_rgb(im)) for im in images]

    def num_tokens(self, size: tuple[int, int]) -> int:
        """Tokens an image of ``size`` (width, height) becomes."""
        return self.strategy.num_tokens(size)

    def preprocess(self, images: Image.Image | Sequence[Image.Image], return_tensors: str | None = "pt",
                   **kwargs: Any) -> BatchFeature:
        inputs = self.image_inputs(images)
        return BatchFeature({
            "pixel_values": torch.cat([x.pixel_values for x in inputs]),
            "image_sizes": torch.tensor([list(x.size) for x in inputs], dtype=torch.long).reshape(-1, 2),
            "num_tiles": torch.tensor([x.pixel_values.shape[0] for x in inputs], dtype=torch.long),
        })


def _flatten_images(images: Any) -> list[Image.Image]:
    if images is None:
        return []
    if isinstance(images, Image.Image):
        return [images]
    out: list[Image.Image] = []
    for item in images:
        out.extend(_flatten_images(item))
    return out


class MMFWProcessor(ProcessorMixin):
    """Tokenizer + :class:`MMFWImageProcessor`: ``processor(images=..., text=...)`` gives the model's inputs."""

    def __init__(self, image_processor: MMFWImageProcessor | None = None, tokenizer: Any = None,
                 chat_template: str | None = None, image_token: str = "<image>",
                 system_prompt: str | None = None) -> None:
        self.image_token = image_token
        self.system_prompt = system_prompt
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    def messages_for_template(self, conversation: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        """transformers-style messages -> mmfw's (string content; images as ``<image>`` lines before the text;
        the run's system prompt first unless the conversation has one)."""
        from mmfw.data.tokenize import with_system_prompt

        out = []
        for message in conversation:
            content = message["content"]
            if not isinstance(content, str):
                images = sum(1 for part in content if part.get("type") == "image")
                texts = [part["text"] for part in content if part.get("type") == "text"]
                content = "\n".join([self.image_token] * images + texts)
            out.append({"role": message["role"], "content": content})
        return with_system_prompt(out, self.system_prompt)

    def apply_chat_template(self, conversation: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> str:
        """The prompt text of ``conversation`` (pass it to ``processor(images=..., text=...)``)."""
        if tokenize:
            raise ValueError("MMFWProcessor.apply_chat_template renders text only (tokenize=False); pass the text "
                             "and the images to processor(images=..., text=...)")
        return self.tokenizer.apply_chat_template(self.messages_for_template(conversation), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, padding_side: str = "left",
                 return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Token ids (placeholders expanded), attention mask and pixel inputs of a prompt or a batch of prompts
        (left-padded for generation). Images are taken in order, one per ``<image>`` placeholder."""
        from mmfw.data.collator import VLMCollator

        if text is None:
            raise ValueError("MMFWProcessor needs text (render it with processor.apply_chat_template)")
        texts = [text] if isinstance(text, str) else list(text)
        pils = _flatten_images(images)
        tid = self.image_token_id
        inputs = self.image_processor.image_inputs(pils) if pils else []
        items, used = [], 0
        for i, prompt in enumerate(texts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            n = ids.count(tid)
            if used + n > len(inputs):
                raise ValueError(f"text {i} has {n} {self.image_token} placeholder(s) but only "
                                 f"{len(inputs) - used} image(s) are left")
            mine = inputs[used:used + n]
            used += n
            expanded: list[int] = []
            it = iter(mine)
            for t in ids:
                expanded.extend([tid] * self.image_processor.num_tokens(next(it).size) if t == tid else [t])
            items.append({"input_ids": expanded, "labels": [-100] * len(expanded), "images": mine})
        if used != len(inputs):
            raise ValueError(f"{len(inputs)} image(s) given but the text has {used} {self.image_token} placeholder(s)")
        batch = VLMCollator(self.tokenizer.pad_token_id, padding_side=padding_side)(items)
        return BatchFeature(batch.model_inputs(), tensor_type=return_tensors)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)
