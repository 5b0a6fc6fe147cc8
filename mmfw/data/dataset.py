"""The LLaVA-format training/eval dataset: records parsed eagerly, images loaded and tokenized lazily per item.

``LlavaDataset(specs, tokenizer, strategy, image_token=..., max_length=...)`` reads every record of every
:class:`~mmfw.config.experiment.DatasetSpec` at construction (parsing and validation only; records that fail
validation are skipped with a warning that counts them by reason, and kept in :attr:`LlavaDataset.skipped`).
``dataset[i]`` opens the sample's images (``image_root`` of the spec, or the JSON file's directory), converts them to
RGB, runs ``strategy.preprocess`` and encodes the conversation with
:func:`~mmfw.data.tokenize.encode_conversation`, expanding each ``<image>`` to ``strategy.num_tokens(image.size)``
tokens, the single source of truth for how many feature rows the image becomes.

Samples longer than ``max_length`` are truncated when every image token lies before the cut (the image features
then still match the placeholders); otherwise :class:`SampleTooLongError` is raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmfw.config.experiment import DatasetSpec
from mmfw.data.conversation import Conversation, RecordError, load_records, parse_record
from mmfw.data.tokenize import (
    IGNORE_INDEX,
    EncodedSample,
    encode_conversation,
    encode_prompt,
    image_token_id,
    with_system_prompt,
)
from mmfw.image_strategies.base import ImageInput, ImageStrategy

logger = logging.getLogger(__name__)

__all__ = ["LlavaDataset", "SampleTooLongError", "SkippedRecord"]


class SampleTooLongError(ValueError):
    """A sample exceeds ``max_length`` and cannot be truncated without cutting into its image tokens."""


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out of the dataset: the file, its position there (see :func:`load_records`), and why."""

    path: str
    position: int
    error: RecordError


@dataclass(frozen=True)
class _Entry:
    conversation: Conversation
    image_root: Path


class LlavaDataset(Dataset):
    """LLaVA-format conversations -> ``{"id", "input_ids", "labels", "images"}`` items (see module docstring)."""

    def __init__(
        self,
        specs: Sequence[DatasetSpec],
        tokenizer: Any,
        strategy: ImageStrategy,
        *,
        image_token: str,
        max_length: int,
        system_prompt: str | None = None,
    ) -> None:
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.strategy = strategy
        self.image_token = image_token
        self.image_token_id = image_token_id(tokenizer, image_token)
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.skipped: list[SkippedRecord] = []
        self._entries: list[_Entry] = []
        for spec in specs:
            self._load_spec(spec)
        if self.skipped:
            reasons = Counter(s.error.reason_code for s in self.skipped)
            logger.warning("skipped %d invalid record(s) (%s); first: %s:%d %s", len(self.skipped),
                           ", ".join(f"{k}: {v}" for k, v in reasons.most_common()), self.skipped[0].path,
                           self.skipped[0].position, self.skipped[0].error.message)
        if not self._entries:
            raise ValueError(f"no usable records in {[s.path for s in specs]} ({len(self.skipped)} skipped)")
        logger.info("loaded %d conversation(s) from %d file(s)", len(self._entries), len(specs))

    def _load_spec(self, spec: DatasetSpec) -> None:
        path = Path(spec.path)
        root = Path(spec.image_root) if spec.image_root is not None else path.parent
        for pos, rec in load_records(path):
            if isinstance(rec, RecordError):
                self.skipped.append(SkippedRecord(str(path), pos, rec))
                continue
            try:
                conv = parse_record(rec, default_id=f"{path.name}:{pos}", image_token=self.image_token)
            except RecordError as e:
                self.skipped.append(SkippedRecord(str(path), pos, e))
                continue
            self._entries.append(_Entry(conv, root))

    def __len__(self) -> int:
        return len(self._entries)

    def conversation(self, i: int) -> Conversation:
        return self._entries[i].conversation

    def image_paths(self, i: int) -> list[Path]:
        """Absolute-or-root-relative paths of sample ``i``'s images, in placeholder order."""
        e = self._entries[i]
        return [e.image_root / p for p in e.conversation.images]

    def answers(self, i: int) -> list[str]:
        """The assistant replies of sample ``i``."""
        return self._entries[i].conversation.answers

    def prompt_messages(self, i: int) -> list[dict[str, str]]:
        """Sample ``i``'s messages up to and excluding the last assistant reply, with the system prompt applied."""
        return with_system_prompt(self._entries[i].conversation.prompt_messages, self.system_prompt)

    def load_images(self, i: int) -> list[ImageInput]:
        """Open and preprocess sample ``i``'s images."""
        out = []
        for p in self.image_paths(i):
            try:
                with Image.open(p) as im:
                    image = im.convert("RGB")
            except (OSError, ValueError) as e:
                raise OSError(f"sample {self.conversation(i).id!r}: cannot read image {str(p)!r}: {e}") from e
            out.append(self.strategy.preprocess(image))
        return out

    def _counts(self, images: Sequence[ImageInput]) -> list[int]:
        return [int(self.strategy.num_tokens(img.size)) for img in images]

    def encode(self, i: int, images: Sequence[ImageInput]) -> EncodedSample:
        """Tokenize sample ``i`` given its preprocessed images, applying the ``max_length`` rule."""
        conv = self.conversation(i)
        enc = encode_conversation(conv.messages, self.tokenizer, image_token=self.image_token,
                                  image_token_counts=self._counts(images), system_prompt=self.system_prompt,
                                  sample_id=conv.id)
        if len(enc) <= self.max_length:
            return enc
        positions = [j for j, t in enumerate(enc.input_ids) if t == self.image_token_id]
        if positions and positions[-1] >= self.max_length:
            raise SampleTooLongError(f"sample {conv.id!r} has {len(enc)} tokens > max_length {self.max_length} and "
                                     f"its image tokens reach position {positions[-1]}; truncating would cut an "
                                     f"image. Raise max_length or use an image strategy with fewer tokens.")
        enc = EncodedSample(enc.input_ids[:self.max_length], enc.labels[:self.max_length])
        if enc.num_supervised == 0:
            logger.warning("sample %r: truncation to %d tokens removed every supervised token", conv.id,
                           self.max_length)
        return enc

    def __getitem__(self, i: int) -> dict[str, Any]:
        images = self.load_images(i)
        enc = self.encode(i, images)
        return {
            "id": self.conversation(i).id,
            "input_ids": torch.tensor(enc.input_ids, dtype=torch.long),
            "labels": torch.tensor(enc.labels, dtype=torch.long),
            "images": images,
        }

    def prompt_item(self, i: int) -> dict[str, Any]:
        """A generation input for sample ``i``: the prompt (up to the last reply) with a generation prompt.

        Returns ``{"id", "input_ids", "labels" (all -100), "images", "answer"}``; collatable with
        :class:`~mmfw.data.collator.VLMCollator` (use left padding for batched generation). Not truncated.
        """
        conv = self.conversation(i)
        images = self.load_images(i)
        ids = encode_prompt(conv.prompt_messages, self.tokenizer, image_token=self.image_token,
                            image_token_counts=self._counts(images), system_prompt=self.system_prompt,
                            sample_id=conv.id)
        return {
            "id": conv.id,
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.full((len(ids),), IGNORE_INDEX, dtype=torch.long),
            "images": images,
            "answer": conv.answers[-1],
        }
