"""The ``data`` section of an experiment: where the training and evaluation records come from (JSON files, Hugging
Face datasets, WebDataset shards), how streamed ones are read, what ``mmfw data synth`` and the offline tokenizer
builder generate, and how samples are cut and skipped.

Part of :mod:`mmfw.config.experiment`, which re-exports every name here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mmfw.config.augment import ImageAugmentConfig
from mmfw.config.base import StrictModel

__all__ = ["DataConfig", "DatasetSpec", "FieldMapping", "StreamConfig", "SyntheticDataConfig", "TokenizerBuildConfig"]


class FieldMapping(StrictModel):
    """Which columns of a Hugging Face dataset hold the LLaVA fields."""

    id: str = "id"
    """The record id (a column that is missing falls back to ``DIR[row]`` when this is left at ``id``)."""
    image: str = "image"
    """An image path (relative to ``image_root``), a list of them, or an ``Image`` feature (embedded bytes); a
    missing column means text-only records when this is left at ``image``."""
    conversations: str = "conversations"
    """The turns, as in LLaVA JSON (``from``/``value`` or ``role``/``content``)."""


class DatasetSpec(StrictModel):
    """One dataset: a LLaVA JSON/JSONL file, a Hugging Face ``save_to_disk`` directory or WebDataset tar shards."""

    path: str
    """A ``.json`` file (a list of records), a ``.jsonl`` file (one record per line), a directory written by
    ``datasets.Dataset.save_to_disk`` (``format: hf``), or WebDataset shards (``format: webdataset``): one ``.tar``,
    a directory of them, or a glob such as ``shards/train-*.tar``."""
    format: Literal["json", "hf", "webdataset"] | None = None
    """How ``path`` is read; by default from its name: ``.json``/``.jsonl`` -> ``json``, ``.tar`` (or a directory
    holding ``.tar`` files) -> ``webdataset``, another directory -> ``hf``. ``hf`` and ``webdataset`` are streamed:
    memory and startup do not grow with the dataset."""
    image_root: str | None = None
    """Directory image paths are relative to; defaults to the JSON file's directory (the dataset directory, the
    shard's directory). A relative path that leaves it (``../``), or an absolute path when ``image_root`` is set,
    makes the record unusable (``image-outside-root``)."""
    fields: FieldMapping | None = None
    """``format: hf`` only: the columns holding ``id``, ``image`` and ``conversations`` (default: those names)."""

    @field_validator("path")
    @classmethod
    def _known_suffix(cls, v: str) -> str:
        suffix = Path(v).suffix.lower()
        if suffix and suffix not in (".json", ".jsonl", ".tar") and not Path(v).is_dir():
            raise ValueError(f"{v!r}: unsupported dataset file type {suffix!r}; expected .json, .jsonl, .tar (or "
                             "a dataset directory)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        kind = self.kind
        if kind == "json" and Path(self.path).suffix.lower() not in (".json", ".jsonl"):
            raise ValueError(f"path: {self.path!r}: format json needs a .json or .jsonl file")
        if self.fields is not None and kind != "hf":
            raise ValueError(f"fields: only for format hf (this dataset is {kind})")
        return self

    @property
    def kind(self) -> str:
        """``format``, or what ``path`` looks like."""
        if self.format is not None:
            return self.format
        suffix = Path(self.path).suffix.lower()
        if suffix in (".json", ".jsonl"):
            return "json"
        if suffix == ".tar" or (Path(self.path).is_dir() and any(Path(self.path).glob("*.tar"))):
            return "webdataset"
        return "hf"

    @property
    def streamed(self) -> bool:
        return self.kind != "json"


class StreamConfig(StrictModel):
    """How streamed datasets (``format: hf`` / ``webdataset``) are read."""

    shuffle_buffer: int = Field(1000, ge=0)
    """Records held to shuffle the stream (0: shards in shuffled order, records in shard order)."""
    hf_shard_rows: int = Field(1000, gt=0)
    """Rows per shard of a Hugging Face dataset (the unit spread over processes and workers)."""
    pack_window: int = Field(512, gt=0)
    """With ``training.packing``: records packed together (first fit) before their rows are batched."""


class SyntheticDataConfig(StrictModel):
    """Procedural visual-QA data written by ``mmfw data synth``; generated when missing."""

    out_dir: str = "data/synth"
    num_train: int = Field(20000, gt=0)
    num_eval: int = Field(600, gt=0)
    image_size: int = Field(64, ge=32)
    """Side of the square images in pixels (the generator needs at least 32)."""
    seed: int = 0
    tasks: tuple[Literal["color", "shape", "position", "count"], ...] = ("color", "shape", "position", "count")
    extra_train_questions: tuple[Literal["color", "shape", "position"], ...] = ()
    """Tasks also asked about every one-shape training image whose scene answers them (position only when the shape
    lies inside one quadrant), as further turns after its balanced question; the eval split keeps one question per
    image. ``[shape]`` gives the tower a shape signal from three quarters of the images instead of one."""
    train_task_weights: dict[Literal["color", "shape", "position", "count"], Annotated[float, Field(gt=0)]] = {}
    """Relative share of each task among the training images (tasks not named: 1); ``{count: 2}`` makes count
    scenes two in five of four tasks. The eval split stays balanced."""
    width: int | None = Field(None, ge=32)
    """Image width in pixels; default ``image_size`` (square). With a width, ``image_size`` is the height: wide or
    tall scenes, on which image strategies (resize, pad, anyres) see different things."""
    shape_scale: float = Field(1.0, ge=0.25, le=1)
    """Factor on every shape's size (relative to the shorter side): small shapes make fine detail matter."""
    max_count: int = Field(4, ge=1, le=9)
    """Count scenes hold 1 to ``max_count`` shapes; above 4 they are small shapes, each in its own cell of a 3x3 grid
    (counting many small shapes needs fine spatial detail)."""

    @model_validator(mode="after")
    def _weighted_tasks(self) -> SyntheticDataConfig:
        unknown = sorted(set(self.train_task_weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"train_task_weights names {unknown}, which are not among the tasks {list(self.tasks)}")
        return self


class TokenizerBuildConfig(StrictModel):
    """Train an offline tokenizer on the training text (for LLMs trained from scratch) when ``out_dir`` is missing."""

    out_dir: str
    vocab_size: int = Field(512, ge=64)


class DataConfig(StrictModel):
    train: list[DatasetSpec] = []
    eval: list[DatasetSpec] = []
    synthetic: SyntheticDataConfig | None = None
    build_tokenizer: TokenizerBuildConfig | None = None
    max_length: int = Field(2048, gt=0)
    """Longest sample in tokens, image tokens included; longer ones follow ``truncation``."""
    system_prompt: str | None = None
    eval_max_samples: int | None = Field(None, gt=0)
    truncation: Literal["drop-sample", "drop-turns", "cut-text"] = "drop-turns"
    """What happens to a sample longer than ``max_length`` (never a cut inside an image's tokens): ``drop-sample``
    skips it; ``drop-turns`` removes whole trailing turns (skipped if not even the first reply fits); ``cut-text``
    cuts at ``max_length``, or just before the image whose tokens the cut would split."""
    on_error: Literal["raise", "skip"] = "skip"
    """A bad record or sample (invalid JSON, missing or corrupt image, too long, nothing supervised...): ``raise``
    stops at the first one; ``skip`` leaves it out, counts it by reason and reports it at the end of each epoch."""
    max_skip_ratio: float = Field(0.05, ge=0, le=1)
    """With ``on_error: skip``, stop with an error when more than this share of a dataset's samples is skipped."""
    stream: StreamConfig = StreamConfig()
    """Reading of streamed training datasets (``format: hf`` / ``webdataset``)."""
    augment: ImageAugmentConfig | None = None
    """Augmentation of training images (random resized crop, colour jitter, RandAugment); never of evaluation or
    inference images. Each image keeps its size, hence its token count."""

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> DataConfig:
        kinds = {spec.streamed for spec in self.train}
        if len(kinds) > 1:
            raise ValueError("train: mixes JSON files with streamed datasets (hf / webdataset); use one kind "
                             "(`mmfw data convert` writes JSON as shards)")
        for k, spec in enumerate(self.eval):
            if spec.streamed:
                raise ValueError(f"eval[{k}]: {spec.path!r} is a streamed dataset ({spec.kind}); evaluation reads "
                                 "JSON/JSONL files")
        return self
