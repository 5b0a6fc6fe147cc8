"""The experiment config: model (one component per registry), data and training.

The ``data`` section's classes live in :mod:`mmfw.config.data` (re-exported here); the ``training`` section's in
:mod:`mmfw.config.training`.

Component fields are tagged unions selected by ``type``. Because plugins register components after import time,
the concrete union is built from a :class:`~mmfw.components.Registries` by :func:`experiment_config_class`; the
static classes here declare the shape and the fields that do not depend on plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from mmfw.config.base import ComponentConfig, StrictModel
from mmfw.config.data import (  # noqa: F401  (re-exported: mmfw.config.experiment is where they were always imported from)
    DataConfig,
    DatasetSpec,
    FieldMapping,
    StreamConfig,
    SyntheticDataConfig,
    TokenizerBuildConfig,
)
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
