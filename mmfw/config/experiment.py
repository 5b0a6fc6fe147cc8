"""The experiment config: model (one component per registry), data and training.

Component fields are tagged unions selected by ``type``. Because plugins register components after import time,
the concrete union is built from a :class:`~mmfw.components.Registries` by :func:`experiment_config_class`; the
static classes here declare the shape and the fields that do not depend on plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, SerializeAsAny, create_model, model_validator

from mmfw.config.base import (
    ConnectorConfig,
    ImageStrategyConfig,
    LLMConfig,
    StrictModel,
    VisionEncoderConfig,
)

if TYPE_CHECKING:
    from mmfw.components import Registries


class FusionConfig(StrictModel):
    """How image features enter the token sequence."""

    image_token: str = "<image>"
    """Placeholder written in the data; expanded to one token per image feature row."""
    dummy_image_for_text_only: bool = True
    """Run a blank image through the vision path when a batch has no image, so every trainable parameter gets a
    gradient (needed by DDP/FSDP)."""


class ModelConfig(StrictModel):
    vision_encoder: SerializeAsAny[VisionEncoderConfig]
    connector: SerializeAsAny[ConnectorConfig]
    llm: SerializeAsAny[LLMConfig]
    image_strategy: SerializeAsAny[ImageStrategyConfig]
    fusion: FusionConfig = FusionConfig()


class DatasetSpec(StrictModel):
    """One LLaVA-format JSON/JSONL file."""

    path: str
    image_root: str | None = None
    """Directory image paths are relative to; defaults to the JSON file's directory."""


class SyntheticDataConfig(StrictModel):
    """Procedural visual-QA data written by ``mmfw data synth``; generated when missing."""

    out_dir: str = "data/synth"
    num_train: int = Field(20000, gt=0)
    num_eval: int = Field(600, gt=0)
    image_size: int = Field(64, ge=16)
    seed: int = 0
    tasks: tuple[Literal["color", "shape", "position", "count"], ...] = ("color", "shape", "position", "count")


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
    system_prompt: str | None = None
    eval_max_samples: int | None = Field(None, gt=0)


ModulePolicy = Literal["frozen", "full"]


class PolicyConfig(StrictModel):
    """What is trained in each module."""

    vision_encoder: ModulePolicy = "frozen"
    connector: ModulePolicy = "full"
    llm: ModulePolicy = "full"
    image_strategy: ModulePolicy = "full"


class TrainingConfig(StrictModel):
    max_steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    policy: PolicyConfig = PolicyConfig()
    log_every: int = Field(10, gt=0)
    eval_every: int | None = Field(None, gt=0)
    save_every: int | None = Field(None, gt=0)
    keep_last: int = Field(2, ge=1)
    num_workers: int = Field(0, ge=0)
    max_new_tokens: int = Field(16, gt=0)
    """Generation length used by evaluation."""

    @model_validator(mode="after")
    def _length_given(self) -> TrainingConfig:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of max_steps and epochs")
        return self


class ExperimentConfig(StrictModel):
    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs/experiment"
    model: ModelConfig
    data: DataConfig = DataConfig()
    training: TrainingConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)


_COMPONENT_FIELDS = {
    "vision_encoder": "vision_encoders",
    "connector": "connectors",
    "llm": "llms",
    "image_strategy": "image_strategies",
}


def experiment_config_class(registries: Registries) -> type[ExperimentConfig]:
    """The concrete :class:`ExperimentConfig` whose component fields accept exactly the registered components."""
    cached = getattr(registries, "_experiment_config_class", None)
    if cached is not None:
        return cached
    fields = {}
    for field_name, reg_name in _COMPONENT_FIELDS.items():
        classes = tuple(e.config for e in getattr(registries, reg_name).entries())
        if classes:
            fields[field_name] = (Annotated[Union[classes], Field(discriminator="type")], ...)  # noqa: UP007
    model_cls = create_model("ModelConfig", __base__=ModelConfig, **fields)
    exp_cls = create_model("ExperimentConfig", __base__=ExperimentConfig, model=(model_cls, ...))
    object.__setattr__(registries, "_experiment_config_class", exp_cls)
    return exp_cls
