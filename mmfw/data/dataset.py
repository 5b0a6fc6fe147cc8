"""The LLaVA-format training/eval dataset: records parsed eagerly, images loaded and tokenized lazily per item.

``LlavaDataset(specs, tokenizer, strategy, image_token=..., max_length=...)`` (or :func:`build_dataset` from a
:class:`~mmfw.config.data.DataConfig`) reads every record of every
:class:`~mmfw.config.data.DatasetSpec` at construction (parsing and validation only). ``dataset[i]`` opens the
sample's images (``image_root`` of the spec, or the JSON file's directory) as RGB (:func:`~mmfw.data.images.load_image`),
runs ``strategy.preprocess``, encodes the conversation with :func:`~mmfw.data.tokenize.encode_conversation`
(expanding each ``<image>`` to ``strategy.num_tokens(image.size)`` tokens, the single source of truth for how many
feature rows the image becomes) and fits it into ``max_length`` with the truncation policy
(:mod:`mmfw.data.truncation`), never cutting inside an image (all of which :class:`~mmfw.data.sample.SampleBuilder`
does, for streamed datasets too).

**Bad data** (``on_error``). With ``"raise"`` the first bad record stops everything with a
:class:`~mmfw.data.errors.RecordError` naming the file, line, record id and reason. With ``"skip"`` (the default), a
record that fails validation is left out at construction (kept in :attr:`LlavaDataset.skipped`) and a sample that
fails when loaded comes out of ``dataset[i]`` as a :class:`~mmfw.data.report.SkippedSample`, which the collator
drops and reports (see :mod:`mmfw.data.report`). With ``max_skip_ratio`` set, construction fails when more than
that share of the records is already unusable.

An item is ``{"id", "input_ids", "labels", "images", "num_tokens", "truncated"}``: ``num_tokens`` is the length
before truncation, ``truncated`` a :class:`~mmfw.data.report.TruncatedSample` or ``None``; ``images`` holds only
the images whose tokens survived truncation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import Dataset

from mmfw.config.data import DatasetSpec
from mmfw.data.conversation import Conversation, load_records, parse_record
from mmfw.data.errors import DataError, RecordError, TooManySkippedError
from mmfw.data.images import load_image
from mmfw.data.report import SkippedSample, summarize_skips
from mmfw.data.sample import EncodingCache, SampleBuilder, path_outside_root
from mmfw.data.tokenize import IGNORE_INDEX, EncodedSample, ImageTokenCountError, encode_prompt, with_system_prompt
from mmfw.data.truncation import TruncationPolicy, truncate
from mmfw.image_strategies.base import ImageInput, ImageStrategy

if TYPE_CHECKING:
    from mmfw.config.data import DataConfig
    from mmfw.data.augment import ImageAugmenter

logger = logging.getLogger(__name__)

__all__ = ["EncodingCache", "LlavaDataset", "build_dataset"]

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class _Entry:
    conversation: Conversation
    image_root: Path
    location: str


def record_location(path: Path, position: int) -> str:
    """``file:line`` for JSONL (``position`` is the 1-based line), ``file[index]`` for a JSON list."""
    return f"{path}:{position}" if path.suffix.lower() == ".jsonl" else f"{path}[{position}]"


class LlavaDataset(Dataset):
    """LLaVA-format conversations -> training items or :class:`SkippedSample` (see module docstring)."""

    def __init__(
        self,
        specs: Sequence[DatasetSpec],
        tokenizer: Any,
        strategy: ImageStrategy,
        *,
        image_token: str,
        max_length: int,
        image_markers: tuple[str, str] | None = None,
        system_prompt: str | None = None,
        on_error: OnError = "skip",
        truncation: TruncationPolicy = "drop-turns",
        max_skip_ratio: float | None = None,
        name: str = "dataset",
        allow_empty: bool = False,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.builder = SampleBuilder(tokenizer, strategy, image_token=image_token, max_length=max_length,
                                     image_markers=image_markers, system_prompt=system_prompt, truncation=truncation)
        self.tokenizer, self.strategy = tokenizer, strategy
        self.image_token, self.image_token_id = image_token, self.builder.image_token_id
        self.image_markers, self.max_length = image_markers, max_length
        self.system_prompt, self.on_error, self.truncation, self.name = system_prompt, on_error, truncation, name
        self.skipped: list[SkippedSample] = []
        self._entries: list[_Entry] = []
        self._ids: dict[str, str] = {}
        for k, spec in enumerate(specs):
            self._load_spec(spec, f"{name}[{k}]")
        self._check_skips(specs, max_skip_ratio, allow_empty)
        logger.info("%s: %d conversation(s) from %d file(s)", name, len(self._entries), len(specs))

    @property
    def augment(self) -> ImageAugmenter | None:
        """Training-time augmentation (see :attr:`SampleBuilder.augment <mmfw.data.sample.SampleBuilder.augment>`)."""
        return self.builder.augment

    @augment.setter
    def augment(self, value: ImageAugmenter | None) -> None:
        self.builder.augment = value

    @property
    def _encodings(self) -> EncodingCache:
        return self.builder.encodings

    def _check_skips(self, specs: Sequence[DatasetSpec], max_skip_ratio: float | None, allow_empty: bool) -> None:
        name, total = self.name, len(self._entries) + len(self.skipped)
        if self.skipped:
            logger.warning("%s: skipped %d of %d record(s): %s", name, len(self.skipped), total,
                           summarize_skips(self.skipped))
            if max_skip_ratio is not None and len(self.skipped) > max_skip_ratio * total:
                raise TooManySkippedError(
                    f"{name}: {len(self.skipped)} of {total} records ({len(self.skipped) / total:.1%}) are invalid, "
                    f"more than data.max_skip_ratio={max_skip_ratio:g}: {summarize_skips(self.skipped)}. Run "
                    "`mmfw data check CONFIG` to list every problem")
        if not self._entries and not allow_empty:
            why = f" ({len(self.skipped)} invalid: {summarize_skips(self.skipped)})" if self.skipped else ""
            raise TooManySkippedError(f"{name}: no usable records in {[s.path for s in specs]}{why}")

    def _reject(self, error: RecordError, location: str, rid: str | None) -> None:
        skipped = SkippedSample.from_error(error, location, id=rid)
        if self.on_error == "raise":
            raise skipped.to_error() from None
        self.skipped.append(skipped)

    def _load_spec(self, spec: DatasetSpec, where: str) -> None:
        path = Path(spec.path)
        if spec.streamed:
            raise DataError(f"{where}.path: {spec.path} is a streamed dataset ({spec.kind}); only training streams it "
                            "(this command reads JSON/JSONL files)")
        if not path.is_file():
            raise DataError(f"{where}.path: dataset file not found: {spec.path}")
        root = Path(spec.image_root) if spec.image_root is not None else path.parent
        records = load_records(path)
        while True:
            try:
                pos, rec = next(records)
            except StopIteration:
                break
            except RecordError as e:  # the whole .json file is unreadable
                raise RecordError(e.reason_code, f"{where}.path: {e.message}") from None
            location = record_location(path, pos)
            if isinstance(rec, RecordError):
                self._reject(rec, location, None)
                continue
            try:
                conv = parse_record(rec, default_id=f"{path.name}:{pos}", image_token=self.image_token)
            except RecordError as e:
                rid = rec.get("id")
                self._reject(e, location, None if rid is None else str(rid))
                continue
            self._add(conv, root, location, path_outside_root(root, conv.images, spec.image_root is not None))

    def _add(self, conv: Conversation, root: Path, location: str, outside: str | None) -> None:
        if outside is not None:
            self._reject(RecordError("image-outside-root", f"record {conv.id!r}: image path {outside!r} leaves "
                                     f"the image root {str(root)!r}; image paths are relative to image_root and "
                                     "stay inside it"), location, conv.id)
            return
        first = self._ids.get(conv.id)
        if first is not None:
            self._reject(RecordError("duplicate-id", f"record id {conv.id!r} is also the id of the record at "
                                     f"{first}; ids must be unique (this one is left out)"), location, conv.id)
            return
        self._ids[conv.id] = location
        self._entries.append(_Entry(conv, root, location))

    def set_epoch(self, epoch: int) -> None:
        """The epoch the augmentation draws for (no effect without :attr:`augment`)."""
        if self.augment is not None:
            self.augment.set_epoch(epoch)

    # -- records --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def conversation(self, i: int) -> Conversation:
        return self._entries[i].conversation

    def location(self, i: int) -> str:
        """Where sample ``i`` comes from (``file:line`` or ``file[index]``)."""
        return self._entries[i].location

    def index_of(self, record_id: str) -> int:
        """The index of the first sample whose id is ``record_id``."""
        for i, e in enumerate(self._entries):
            if e.conversation.id == record_id:
                return i
        raise KeyError(f"{self.name}: no record with id {record_id!r}")

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

    # -- loading --------------------------------------------------------------------------------------------------
    def _open(self, i: int) -> Any:
        root = self._entries[i].image_root
        return lambda name: load_image(root / name)

    def load_images(self, i: int) -> list[ImageInput]:
        """Open and preprocess sample ``i``'s images. Raises :class:`RecordError` (``missing-image``, ...)."""
        return self.builder.load_images(self.conversation(i), self._open(i), i)

    def encode_full(self, i: int, images: Sequence[ImageInput]) -> EncodedSample:
        """Tokenize sample ``i`` given its preprocessed images, without truncation (cached by content)."""
        return self.builder.encode_full(self.conversation(i), images)

    def encode(self, i: int, images: Sequence[ImageInput]) -> EncodedSample:
        """Tokenize sample ``i`` and apply the truncation policy. Raises :class:`RecordError` when it cannot be
        used (``too-long``, ``no-supervised-tokens``, ``template-mismatch``...)."""
        return truncate(self.encode_full(i, images), self.max_length, self.truncation,
                        self.conversation(i).id).sample

    def _build(self, i: int) -> tuple[dict[str, Any] | None, RecordError | None, int | None]:
        """``(item, None, length)`` or ``(None, error, length if known)``; never raises :class:`RecordError`."""
        return self.builder.build(self.conversation(i), self._open(i), i)

    def _skipped(self, i: int, error: RecordError, num_tokens: int | None = None) -> SkippedSample:
        e = self._entries[i]
        rid = e.conversation.id
        message = error.message if repr(rid) in error.message else f"record {rid!r}: {error.message}"
        return SkippedSample(e.location, rid, error.reason_code, message, index=i, num_tokens=num_tokens)

    def _skip_or_raise(self, i: int, error: RecordError, num_tokens: int | None = None) -> SkippedSample:
        skipped = self._skipped(i, error, num_tokens)
        if self.on_error == "raise":
            raise skipped.to_error()
        return skipped

    def __getitem__(self, i: int) -> dict[str, Any] | SkippedSample:
        if i < 0:
            i += len(self)
        item, err, num_tokens = self._build(i)
        return item if err is None else self._skip_or_raise(i, err, num_tokens)

    def inspect(self, i: int) -> dict[str, Any] | SkippedSample:
        """``self[i]``, but a bad sample is always returned as a :class:`SkippedSample`, whatever ``on_error`` says
        (for ``mmfw data check``); its ``num_tokens`` is set when the sample could be tokenized."""
        item, err, num_tokens = self._build(i)
        return item if err is None else self._skipped(i, err, num_tokens)

    def prompt_item(self, i: int) -> dict[str, Any] | SkippedSample:
        """A generation input for sample ``i``: the prompt (up to the last reply) with a generation prompt.

        Returns ``{"id", "input_ids", "labels" (all -100), "images", "answer"}``; collatable with
        :class:`~mmfw.data.collator.VLMCollator` (use left padding for batched generation). Not truncated. A sample
        whose images cannot be loaded is a :class:`SkippedSample` (or raises, with ``on_error="raise"``).
        """
        conv = self.conversation(i)
        try:
            images = self.load_images(i)
            ids = encode_prompt(conv.prompt_messages, self.tokenizer, image_token=self.image_token,
                                image_token_counts=self.builder.counts(images), system_prompt=self.system_prompt,
                                sample_id=conv.id, image_markers=self.image_markers)
        except RecordError as err:
            return self._skip_or_raise(i, err)
        except ImageTokenCountError as e:
            return self._skip_or_raise(i, RecordError("image-token-mismatch", str(e)))
        return {
            "id": conv.id,
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.full((len(ids),), IGNORE_INDEX, dtype=torch.long),
            "images": images,
            "answer": conv.answers[-1],
        }


def build_dataset(specs: Sequence[DatasetSpec], cfg: DataConfig, tokenizer: Any, strategy: ImageStrategy, *,
                  image_token: str, image_markers: tuple[str, str] | None = None,
                  name: str = "data.train") -> LlavaDataset:
    """A :class:`LlavaDataset` with the policies of ``cfg`` (``max_length``, ``system_prompt``, ``on_error``,
    ``truncation``, ``max_skip_ratio``); ``name`` is the YAML path of ``specs`` (used in messages)."""
    return LlavaDataset(specs, tokenizer, strategy, image_token=image_token, image_markers=image_markers,
                        max_length=cfg.max_length, system_prompt=cfg.system_prompt, on_error=cfg.on_error, truncation=cfg.truncation,
                        max_skip_ratio=cfg.max_skip_ratio, name=name)
