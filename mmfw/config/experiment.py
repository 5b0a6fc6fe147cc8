"""The experiment config: model (one component per registry), data and training.

Component fields are tagged unions selected by ``type``. Because plugins register components after import time,
the concrete union is built from a :class:`~mmfw.components.Registries` by :func:`experiment_config_class`; the
static classes here declare the shape and the fields that do not depend on plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from mmfw.config.augment import ImageAugmentConfig
from mmfw.config.base import ComponentConfig, StrictModel
from mmfw.config.kinds import KINDS
from mmfw.config.training import (
    RUN_LEVEL_FIELDS,
    PartialPolicyConfig,
    PartialSection,
    PolicyConfig,  # noqa: F401  (re-exported)
    TrainingConfig,
    merge_training,
    partial_fields,
)

if TYPE_CHECKING:
    from mmfw.config.kinds import Registries


class FusionConfig(StrictModel):
    """How image features enter the token sequence."""

    image_token: str = "<image>"
    """Placeholder written in the data; expanded to one token per image feature row."""
    dummy_image_for_text_only: bool = True
    """Run a blank image through the vision path when a batch has no image, so every trainable parameter gets a
    gradient (needed by DDP/FSDP)."""
    image_start_token: str | None = None
    """Written before each image's placeholder run (OmniLMM / LLaVA ``<im_start>``); set with
    ``image_end_token``. Added to the tokenizer as a special token, never supervised."""
    image_end_token: str | None = None
    """Written right after each image's placeholder run (``<im_end>``); set with ``image_start_token``."""

    @model_validator(mode="after")
    def _markers(self) -> FusionConfig:
        start, end = self.image_start_token, self.image_end_token
        if (start is None) != (end is None):
            raise ValueError("set both image_start_token and image_end_token, or neither")
        if start is not None:
            tokens = [self.image_token, start, end]
            if any(not t for t in tokens) or len(set(tokens)) != 3:
                raise ValueError(f"image_token, image_start_token and image_end_token must be three different "
                                 f"non-empty strings, got {tokens}")
        return self

    @property
    def image_markers(self) -> tuple[str, str] | None:
        """``(start, end)`` tokens written around each image's placeholder run, or None."""
        if self.image_start_token is None or self.image_end_token is None:
            return None
        return self.image_start_token, self.image_end_token

    @property
    def added_tokens(self) -> tuple[str, ...]:
        """Every token the fusion adds to the tokenizer: the placeholder, then the start/end markers."""
        return (self.image_token, *(self.image_markers or ()))

    def image_sequence_length(self, feature_rows: int) -> int:
        """Positions one image takes in the token sequence: its feature rows plus the start/end markers. With the
        strategy's ``num_tokens`` as ``feature_rows``, the single source of truth for an image's token count."""
        return int(feature_rows) + (2 if self.image_markers is not None else 0)


class _ModelSection(StrictModel):
    def components(self) -> dict[str, ComponentConfig]:
        """The component configs by kind key, in :data:`~mmfw.config.kinds.KINDS` order."""
        return {k.key: getattr(self, k.key) for k in KINDS}


ModelConfig = create_model(
    "ModelConfig", __base__=_ModelSection, __doc__="The VLM: one component per kind (``model.<kind key>``) and the fusion.",
    **{k.key: (SerializeAsAny[k.config_base], Field(description=f"The {k.label} (``type`` selects it).")) for k in KINDS},
    fusion=(FusionConfig, FusionConfig()),
)


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


STAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

PartialDataConfig = create_model("PartialDataConfig", __base__=PartialSection, __doc__=(
    "``data`` keys a stage changes (e.g. its own ``train`` files); the others come from the top-level ``data``."),
    **partial_fields(DataConfig))

_StageFields = create_model("_StageFields", __base__=PartialSection,
                            **partial_fields(TrainingConfig, replace={"policy": PartialPolicyConfig}))


class StageConfig(_StageFields):
    """One stage of a multi-stage run: its name, and the ``training`` (and ``data``) keys it changes.

    Any ``training`` field may be set here; ``policy`` entries replace the policy of the modules they name.
    """

    name: str = Field(pattern=STAGE_NAME_PATTERN)
    """Unique, used as the stage's directory name under ``RUN_DIR/stages``."""
    data: Optional[PartialDataConfig] = None  # noqa: UP045

    @model_serializer(mode="wrap")
    def _only_set(self, handler: Any) -> Any:
        data = handler(self)
        return {"name": self.name, **{k: v for k, v in data.items() if k in self.model_fields_set and k != "name"}}


def _check_augment(where: str, training: TrainingConfig, data: DataConfig) -> None:
    if training.feature_cache is not None and data.augment is not None:
        raise ValueError(f"{where}: feature_cache with data.augment would cache every augmented variant of every "
                         "image; use one or the other")


def _check_stream(prefix: str, training: TrainingConfig, data: DataConfig) -> None:
    """What a streamed training set cannot follow, found when the config loads (not after the model is built)."""
    if training.group_by_modality and data.train and data.train[0].streamed:
        raise ValueError(f"{prefix}group_by_modality: not available for streamed datasets (data.train is "
                         f"{data.train[0].kind}); use group_by_length or packing")


@dataclass(frozen=True)
class ResolvedStage:
    """A stage with its ``training`` and ``data`` sections fully resolved."""

    index: int
    name: str
    training: TrainingConfig
    data: DataConfig
    implicit: bool = False
    """True for the single stage of a config without ``stages``."""


class ExperimentConfig(StrictModel):
    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs/experiment"
    model: ModelConfig
    data: DataConfig = DataConfig()
    training: TrainingConfig
    """Training settings; with ``stages``, the defaults every stage starts from."""
    stages: list[StageConfig] = []
    """Ordered stages (e.g. align, then finetune), each starting from the previous one's model. Empty: one stage
    trained with ``training``."""

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    @model_validator(mode="after")
    def _stages_resolve(self) -> ExperimentConfig:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stages: duplicate stage name(s) {dupes}")
        self.stage_plan()
        return self

    def stage_plan(self) -> list[ResolvedStage]:
        """Every stage in order, with its resolved ``training`` and ``data`` (a single implicit one without
        ``stages``). Raises ``ValueError`` naming the stage when a resolved section is invalid."""
        if not self.stages:
            if not self.training.has_length:
                raise ValueError("training: set exactly one of max_steps and epochs")
            _check_augment("training", self.training, self.data)
            _check_stream("training.", self.training, self.data)
            return [ResolvedStage(0, "train", self.training, self.data, implicit=True)]
        out = []
        for i, stage in enumerate(self.stages):
            where = f"stages[{i}] ({stage.name})"
            try:
                training = TrainingConfig.model_validate(merge_training(self.training, stage))
                data = self.data
                if stage.data is not None:
                    data = DataConfig.model_validate({**self.data.model_dump(), **stage.data.model_dump()})
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(x) for x in first["loc"])
                raise ValueError(f"{where}: {loc + ': ' if loc else ''}{first['msg'].removeprefix('Value error, ')}"
                                 ) from None
            if not training.has_length:
                raise ValueError(f"{where}: set exactly one of max_steps and epochs (in the stage or in training)")
            for key in RUN_LEVEL_FIELDS:
                if getattr(training, key) != getattr(self.training, key):
                    raise ValueError(f"{where}: {key} applies to the whole run; set it in training, not per stage")
            _check_augment(where, training, data)
            _check_stream(f"{where}: ", training, data)
            out.append(ResolvedStage(i, stage.name, training, data))
        return out


def experiment_config_class(registries: Registries) -> type[ExperimentConfig]:
    """The concrete :class:`ExperimentConfig` whose component fields accept exactly the registered components."""
    cached = getattr(registries, "_experiment_config_class", None)
    if cached is not None:
        return cached
    fields = {}
    for kind in KINDS:
        classes = tuple(e.config for e in registries.of(kind).entries())
        if classes:
            fields[kind.key] = (Annotated[Union[classes], Field(discriminator="type")], ...)  # noqa: UP007
    model_cls = create_model("ModelConfig", __base__=ModelConfig, **fields)
    exp_cls = create_model("ExperimentConfig", __base__=ExperimentConfig, model=(model_cls, ...))
    object.__setattr__(registries, "_experiment_config_class", exp_cls)
    return exp_cls
