"""Multi-turn chat about images that encodes each image once and keeps the KV cache between turns.

    >>> chat = load_pipeline("runs/quickstart").chat("data/synth/images/eval_000000.png")
    >>> chat.ask("What color is the shape?")
    'red'
    >>> chat.ask("What shape is it?")  # no vision encoder call, only the new tokens go through the LLM
    'circle'

A :class:`Conversation` keeps three things between turns: the messages (rendered with the run's chat template and
system prompt, as training saw them), the feature rows of every image (the vision encoder and connector run once
per image, when the turn that first shows it is asked) and the LLM's KV cache of every token it has read. Each turn
renders the whole conversation again, keeps the cache for the longest prefix of tokens it already holds (normally
all of the earlier turns; a reply that re-tokenises differently costs a few tokens) and runs the LLM on the rest
only. Replies are the ones a fresh generate over the whole conversation gives (greedy: token-identical).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mmfw.data.images import load_image, to_rgb
from mmfw.data.tokenize import encode_prompt
from mmfw.model.fusion import splice_image_features

ImageLike = str | Path | Image.Image


def _cache_key() -> str:
    """The name transformers gives the KV cache in ``generate`` (``cache`` from 5.x, ``past_key_values`` before)."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    fields = {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
    return "cache" if "cache" in fields else "past_key_values"


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Conversation:
    """A chat with a loaded model: :meth:`add_image`, then :meth:`ask` (a user turn; returns the reply).

    ``pipeline`` is a :class:`mmfw.inference.VLMPipeline` (model, tokenizer, config, device; the conversation sits
    below the inference layer and does not import it).

    Attributes:
        messages: the conversation so far (``{"role", "content"}``; images appear as ``<image>`` lines).
        vision_encoder_calls: forward calls of the vision encoder made by this conversation so far.
        llm_tokens: tokens the LLM has read as input over all turns (prompt tokens not served from the cache).
        last_reply_ids: the token ids of the latest reply, as generated.
    """

    def __init__(self, pipeline: Any, system_prompt: str | None = None, max_new_tokens: int = 32,
                 reuse_cache: bool = True) -> None:
        self.pipeline, self.max_new_tokens, self.reuse_cache = pipeline, max_new_tokens, reuse_cache
        self.system_prompt = system_prompt if system_prompt is not None else pipeline.cfg.data.system_prompt
        self.messages: list[dict[str, str]] = []
        self.vision_encoder_calls = 0
        self.llm_tokens = 0
        self.last_reply_ids: list[int] = []
        self._pending: list[Image.Image] = []
        self._features: list[torch.Tensor] = []  # (rows_i, D) per image, in conversation order
        self._cache: Any = None
        self._cache_ids: list[int] = []

    @property
    def model(self) -> Any:
        return self.pipeline.model

    @property
    def num_images(self) -> int:
        return len(self._features) + len(self._pending)

    def add_image(self, image: ImageLike) -> Conversation:
        """Show an image with the next user turn (it is encoded once, when that turn is asked)."""
        self._pending.append(to_rgb(image) if isinstance(image, Image.Image) else load_image(image))
        return self

    @contextmanager
    def _count_encoder_calls(self) -> Iterator[None]:
        def hook(*_: Any) -> None:
            self.vision_encoder_calls += 1

        handle = self.model.vision_encoder.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def _encode_pending(self) -> None:
        if not self._pending:
            return
        strategy, device = self.model.image_strategy, self.pipeline.device
        inputs = [strategy.preprocess(im) for im in self._pending]
        pixels = torch.cat([x.pixel_values for x in inputs]).to(device)
        sizes = torch.tensor([list(x.size) for x in inputs], dtype=torch.long, device=device)
        tiles = torch.tensor([x.pixel_values.shape[0] for x in inputs], dtype=torch.long, device=device)
        with self._count_encoder_calls():
            self._features.extend(self.model.encode_images_split(pixels, sizes, tiles))
        self._pending = []

    def prompt_ids(self, messages: Sequence[dict[str, str]] | None = None) -> list[int]:
        """The token ids of the whole conversation (``messages`` or the current ones) with a generation prompt."""
        token = self.pipeline.cfg.model.fusion.image_token
        counts = [f.shape[0] for f in self._features]
        return encode_prompt(list(self.messages if messages is None else messages), self.pipeline.tokenizer,
                             image_token=token, image_token_counts=counts, system_prompt=self.system_prompt)

    def _embeds(self, ids: list[int]) -> torch.Tensor:
        ids_t = torch.tensor([ids], dtype=torch.long, device=self.pipeline.device)
        embeds = self.model.llm.get_input_embeddings()(ids_t)
        features = torch.cat(self._features) if self._features else embeds.new_zeros(0, embeds.shape[-1])
        embeds, _ = splice_image_features(embeds, ids_t, self.model.image_token_id, features)
        return embeds

    def _keep_cache(self, ids: list[int]) -> int:
        """Crop the cache to the longest prefix of ``ids`` it holds (at least one token is left to run)."""
        if self._cache is None or not self.reuse_cache:
            self._cache, self._cache_ids = None, []
            return 0
        keep = min(_common_prefix(self._cache_ids, ids), len(ids) - 1)
        held = self._cache.get_seq_length()
        if keep < held:
            self._cache.crop(keep - held)  # a negative count removes that many tokens (every transformers 5.x)
        self._cache_ids = self._cache_ids[:keep]
        return keep

    @torch.no_grad()
    def ask(self, text: str, images: Sequence[ImageLike] = (), max_new_tokens: int | None = None,
            **generate_kwargs: Any) -> str:
        """Add a user turn (with ``images`` and any added with :meth:`add_image`) and return the model's reply.

        Images new to this turn get ``<image>`` lines in front of the text unless the text holds placeholders.
        """
        for image in images:
            self.add_image(image)
        token = self.pipeline.cfg.model.fusion.image_token
        new_images = len(self._pending)
        if new_images and token not in text:
            text = "\n".join([token] * new_images + [text])
        self._encode_pending()
        messages = [*self.messages, {"role": "user", "content": text}]
        ids = self.prompt_ids(messages)
        cached = self._keep_cache(ids)
        self.llm_tokens += len(ids) - cached
        embeds = self._embeds(ids)
        generate_kwargs.setdefault("do_sample", False)
        key = _cache_key()
        if self._cache is not None:
            generate_kwargs[key] = self._cache
        out = self.model.llm.model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=embeds.device),
            max_new_tokens=max_new_tokens or self.max_new_tokens, return_dict_in_generate=True, **generate_kwargs)
        new = out.sequences[0].tolist()
        self.last_reply_ids = new
        self._cache = getattr(out, key)
        if self._cache is not None:
            self._cache_ids = (ids + new)[:self._cache.get_seq_length()]
        reply = self.pipeline.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.messages = [*messages, {"role": "assistant", "content": reply}]
        return reply

    def reset(self) -> None:
        """Forget every turn, image and cached token."""
        self.__init__(self.pipeline, self.system_prompt, self.max_new_tokens, self.reuse_cache)
