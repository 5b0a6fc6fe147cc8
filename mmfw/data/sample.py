"""One conversation -> one training item: images opened and preprocessed, conversation tokenized and truncated.

:class:`SampleBuilder` is what every dataset shares (the JSON :class:`~mmfw.data.dataset.LlavaDataset` and the
streamed :class:`~mmfw.data.stream.StreamingDataset`): it is given a :class:`~mmfw.data.conversation.Conversation`
and a function that opens one of its images by name, and returns the item ``{"id", "input_ids", "labels",
"images", "num_tokens", "truncated"}`` or the :class:`~mmfw.data.errors.RecordError` that makes it unusable. A
conversation repeated verbatim (templated or synthetic data) is tokenized once per loading process
(:class:`EncodingCache`).
"""

from __future__ import annotations

import os
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from mmfw.data.conversation import Conversation
from mmfw.data.errors import RecordError
from mmfw.data.report import TruncatedSample
from mmfw.data.tokenize import (
    EncodedSample,
    ImageTokenCountError,
    TemplateMismatchError,
    encode_conversation,
    image_token_id,
)
from mmfw.data.truncation import TRUNCATION_POLICIES, TruncationPolicy, truncate
from mmfw.image_strategies.base import ImageInput, ImageStrategy

if TYPE_CHECKING:
    from mmfw.data.augment import ImageAugmenter

__all__ = ["EncodingCache", "SampleBuilder", "path_outside_root"]

ImageOpener = Callable[[str], Image.Image]
"""Opens one image of a conversation by the name the record gives it (raises :class:`RecordError`)."""


def path_outside_root(root: Path, paths: Sequence[str], explicit_root: bool) -> str | None:
    """The first of ``paths`` that leaves ``root`` (``../``, or absolute when the root was given), else None."""
    root_norm = os.path.normpath(os.path.abspath(root))
    for p in paths:
        if (explicit_root or not os.path.isabs(p)) and os.path.commonpath(
                [root_norm, os.path.normpath(os.path.join(root_norm, p))]) != root_norm:
            return p
    return None


class EncodingCache:
    """Least-recently-used :class:`EncodedSample` s by conversation content, bounded by their total token count.

    Templated and synthetic data repeat whole conversations (the same question and answer about another image), and
    rendering a chat template and tokenizing costs milliseconds per turn, in the data-loading worker, on every epoch.
    Entries are stored as int32 arrays (8 bytes per token for ids and labels), and every ``get`` returns a fresh
    sample, so callers may modify what they get.
    """

    def __init__(self, max_tokens: int = 2_000_000) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0
        self.hits = 0
        self._entries: OrderedDict[Hashable, tuple[array, array, list[tuple[int, int]], list[int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> EncodedSample | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        ids, labels, spans, turn_ends = entry
        return EncodedSample(ids.tolist(), labels.tolist(), image_spans=list(spans), turn_ends=list(turn_ends))

    def put(self, key: Hashable, enc: EncodedSample) -> None:
        if key in self._entries or len(enc) > self.max_tokens:
            return
        self._entries[key] = (array("i", enc.input_ids), array("i", enc.labels), list(enc.image_spans),
                              list(enc.turn_ends))
        self.tokens += len(enc)
        while self.tokens > self.max_tokens:
            _, (ids, *_rest) = self._entries.popitem(last=False)
            self.tokens -= len(ids)


class SampleBuilder:
    """Conversations -> training items with one tokenizer, image strategy and length policy (see module docstring)."""

    def __init__(self, tokenizer: Any, strategy: ImageStrategy, *, image_token: str, max_length: int,
                 image_markers: tuple[str, str] | None = None, system_prompt: str | None = None,
                 truncation: TruncationPolicy = "drop-turns") -> None:
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation must be one of {list(TRUNCATION_POLICIES)}, got {truncation!r}")
        self.tokenizer, self.strategy = tokenizer, strategy
        self.image_token, self.image_markers = image_token, image_markers
        self.image_token_id = image_token_id(tokenizer, image_token)
        self.max_length, self.system_prompt, self.truncation = max_length, system_prompt, truncation
        self.augment: ImageAugmenter | None = None
        """Training-time augmentation, ``(image, sample index, image index) -> image`` of the same size (see
        :mod:`mmfw.data.augment`); None for evaluation and inference."""
        self.encodings = EncodingCache()

    def counts(self, images: Sequence[ImageInput]) -> list[int]:
        return [int(self.strategy.num_tokens(img.size)) for img in images]

    def load_images(self, conv: Conversation, open_image: ImageOpener, index: int) -> list[ImageInput]:
        """Open and preprocess ``conv``'s images (``index`` seeds the augmentation). Raises :class:`RecordError`."""
        out = []
        for k, name in enumerate(conv.images):
            image = open_image(name)
            if self.augment is not None:
                image = self.augment(image, index, k)
            try:
                out.append(self.strategy.preprocess(image))
            except (ValueError, OSError) as e:
                raise RecordError("unusable-image", f"image {name!r} ({image.width}x{image.height}): the image "
                                                    f"strategy cannot preprocess it: {e}") from None
        return out

    def encode_full(self, conv: Conversation, images: Sequence[ImageInput]) -> EncodedSample:
        """Tokenize ``conv`` given its preprocessed images, without truncation (cached by content)."""
        counts = self.counts(images)
        key = (tuple((m["role"], m["content"]) for m in conv.messages), tuple(counts))
        cached = self.encodings.get(key)
        if cached is not None:
            return cached
        try:
            enc = encode_conversation(conv.messages, self.tokenizer, image_token=self.image_token,
                                      image_token_counts=counts, system_prompt=self.system_prompt, sample_id=conv.id,
                                      image_markers=self.image_markers)
        except TemplateMismatchError as e:
            raise RecordError("template-mismatch", str(e)) from None
        except ImageTokenCountError as e:
            raise RecordError("image-token-mismatch", f"{e}; does the chat template drop or repeat the "
                                                      f"{self.image_token!r} placeholder?") from None
        self.encodings.put(key, enc)
        return enc

    def build(self, conv: Conversation, open_image: ImageOpener, index: int
              ) -> tuple[dict[str, Any] | None, RecordError | None, int | None]:
        """``(item, None, length)`` or ``(None, error, length if known)``; never raises :class:`RecordError`."""
        num_tokens = None
        try:
            images = self.load_images(conv, open_image, index)
            full = self.encode_full(conv, images)
            num_tokens = len(full)
            fit = truncate(full, self.max_length, self.truncation, conv.id)
        except RecordError as err:
            return None, err, num_tokens
        enc = fit.sample
        item = {
            "id": conv.id,
            "input_ids": torch.tensor(enc.input_ids, dtype=torch.long),
            "labels": torch.tensor(enc.labels, dtype=torch.long),
            "images": images[:fit.num_images],
            "num_tokens": num_tokens,
            "truncated": TruncatedSample(conv.id, index, self.truncation, num_tokens, len(enc))
            if fit.truncated else None,
        }
        return item, None, num_tokens
