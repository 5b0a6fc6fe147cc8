"""Training configs: per-module policies (frozen / full / LoRA), the ``training`` section, and partial sections.

A module policy is a tagged union selected by ``type`` (``frozen``, ``full``, ``lora``); a bare string is shorthand
for the policy with default fields, so ``llm: frozen`` and ``llm: {type: lora, r: 8}`` are both valid. Stages (see
:class:`mmfw.config.experiment.StageConfig`) override the ``training`` section key by key; their fields come from
:func:`partial_model`, so every ``training`` field can be set per stage without being declared twice.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, create_model, field_validator, model_serializer, model_validator
from pydantic.fields import FieldInfo

from mmfw.config.base import StrictModel
from mmfw.config.kinds import KINDS

COMPONENTS = tuple(k.key for k in KINDS)
"""The VLM's top-level modules (one per component kind), each with its own policy."""


class _PolicyBase(StrictModel):
    lr_scale: float = Field(1.0, gt=0)
    """Learning-rate multiplier of this module's trainable parameters."""
    gradient_checkpointing: bool = False
    """Recompute this module's activations in the backward pass (memory for compute). Applies to transformers models
    (the LLM, HF vision encoders) and to modules that expose ``layer_groups()``."""

    @model_serializer(mode="wrap")
    def _shorthand(self, handler: Any) -> Any:
        data = handler(self)
        fields = type(self).model_fields
        if isinstance(data, dict) and all(v == fields[k].default for k, v in data.items() if k != "type"):
            return self.type  # type: ignore[attr-defined]
        return data


class FrozenPolicy(_PolicyBase):
    """No parameter of the module is trained (except, optionally, its last blocks)."""

    type: Literal["frozen"] = "frozen"
    unfreeze_last_blocks: int = Field(0, ge=0)
    """Train the last N blocks of the module (``VisionEncoder.layer_groups()``), the rest stays frozen."""


class FullPolicy(_PolicyBase):
    """Every parameter of the module is trained."""

    type: Literal["full"] = "full"


class LoraPolicy(_PolicyBase):
    """Low-rank adapters (peft ``LoraConfig``) on the module's linear layers; the base weights stay frozen."""

    type: Literal["lora"] = "lora"
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], tuple[str, ...]] = "all-linear"  # noqa: UP007
    """Layer names (or dotted-name suffixes) that get adapters, e.g. ``[q_proj, v_proj]``; ``all-linear`` for every
    linear layer except the output head. A name that matches no layer is a config error."""
    use_rslora: bool = False
    """Scale adapters by ``alpha / sqrt(r)`` instead of ``alpha / r``."""

    @model_validator(mode="after")
    def _targets(self) -> LoraPolicy:
        if isinstance(self.target_modules, tuple) and not self.target_modules:
            raise ValueError("target_modules is empty; name the layers that get adapters or use 'all-linear'")
        return self


def _shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


# What a policy may be written as, for the JSON schema of editors: the shorthand string or the mapping.
_MODULE_POLICY_INPUT = Union[Literal["frozen", "full", "lora"], FrozenPolicy, FullPolicy, LoraPolicy]  # noqa: UP007
_SUBMODULE_POLICY_INPUT = Union[Literal["frozen", "full"], FrozenPolicy, FullPolicy]  # noqa: UP007
ModulePolicy = Annotated[Union[FrozenPolicy, FullPolicy, LoraPolicy],  # noqa: UP007
                         Field(discriminator="type"),
                         BeforeValidator(_shorthand, json_schema_input_type=_MODULE_POLICY_INPUT)]
SubmodulePolicy = Annotated[Union[FrozenPolicy, FullPolicy],  # noqa: UP007
                            Field(discriminator="type"),
                            BeforeValidator(_shorthand, json_schema_input_type=_SUBMODULE_POLICY_INPUT)]


class _PolicySection(StrictModel):
    @model_validator(mode="after")
    def _new_rows(self) -> _PolicySection:
        if self.new_token_embeddings and isinstance(self.llm, FullPolicy):  # type: ignore[attr-defined]
            raise ValueError("new_token_embeddings: llm 'full' already trains every embedding row; use llm: frozen "
                             "or lora")
        return self

    def components(self) -> dict[str, FrozenPolicy | FullPolicy | LoraPolicy]:
        return {name: getattr(self, name) for name in COMPONENTS}


_DEFAULT_POLICIES = {"frozen": FrozenPolicy(), "full": FullPolicy()}

PolicyConfig = create_model(
    "PolicyConfig", __base__=_PolicySection, __doc__="What is trained in each module of the VLM, and how.",
    **{k.key: (ModulePolicy, Field(_DEFAULT_POLICIES[k.default_policy], description=f"Policy of the {k.label}."))
       for k in KINDS},
    modules=(dict[str, SubmodulePolicy], Field({}, description=(
        "Policies of sub-modules by dotted path (e.g. ``llm.model.lm_head: full``), applied after the module "
        "policies; for components that bring their own sub-modules."))),
    new_token_embeddings=(bool, Field(False, description=(
        "Also train the LLM's input and output embedding rows of the tokens mmfw added (``model.fusion``'s tokens "
        "and ``llm.extra_special_tokens``), and only those: every original row stays bit-identical (OmniLMM's "
        "``orig_embeds_params``). With an ``llm`` policy of ``frozen`` or ``lora``; the rows get no weight decay."))),
)


Tracker = Literal["tensorboard", "wandb"]


class TrainingConfig(StrictModel):
    """How one stage is trained (a single-stage experiment has exactly one)."""

    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps. Set exactly one of ``max_steps`` and ``epochs``."""
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    """Samples per micro-batch and process (rows per micro-batch with ``packing``)."""
    eval_batch_size: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    fused_optimizer: bool = True
    compile: bool = False
    """Compile each component's inner transformers model with ``torch.compile`` (in place: parameter and
    state-dict names unchanged), which fuses the elementwise work of its layers. Steps get faster after a one-off
    compilation of tens of seconds (longer for larger models), so it pays off for long runs only."""
    """AdamW's fused kernel (one pass over each parameter on CPU and CUDA; about 3x faster than the default loop on a
    CPU); ``false`` for the plain implementation (e.g. for parameters that fused AdamW does not take)."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision (the same for every stage). fp16 needs a CUDA device; bf16 works on CPU and recent GPUs."""
    policy: PolicyConfig = PolicyConfig()
    group_by_length: bool = False
    """Batch samples of similar length together (less padding); order is still shuffled, deterministic per epoch."""
    group_by_modality: bool = False
    """Batches of samples with images only or text-only samples only, grouped by length within each modality (LLaVA's
    ``group_by_modality_length``); deterministic per epoch. Implies length grouping; not with ``packing``."""
    packing: bool = False
    """Pack several samples into each row (padding-free; position ids restart per sample, no attention across
    samples). ``batch_size`` then counts rows of ``pack_length`` tokens."""
    pack_length: int | None = Field(None, gt=0)
    """Row capacity in tokens with ``packing``; defaults to ``data.max_length``."""
    feature_cache: str | None = None
    """Directory caching the frozen vision encoder's features on disk (keyed by encoder weights and pixels), so
    later epochs and later runs skip the encoder. Only with a fully frozen encoder."""
    max_bad_steps: int = Field(0, ge=0)
    """Steps with a non-finite loss (or gradient norm) that are skipped (and counted) before training stops."""
    log_every: int = Field(10, gt=0)
    eval_every: int | None = Field(None, gt=0)
    save_every: int | None = Field(None, gt=0)
    keep_last: int = Field(2, ge=1)
    num_workers: int = Field(0, ge=0)
    max_new_tokens: int = Field(16, gt=0)
    """Generation length used by evaluation."""
    trackers: Union[Literal["auto"], tuple[Tracker, ...]] = "auto"  # noqa: UP007
    """Experiment trackers besides ``metrics.jsonl`` (through Accelerate): ``auto`` uses tensorboard when it is
    installed; ``[]`` for none; ``[tensorboard, wandb]`` to require them."""

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"Adam betas must each lie in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _one_length(self) -> TrainingConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("set only one of max_steps and epochs")
        if self.group_by_modality and self.packing:
            raise ValueError("group_by_modality: packed rows mix samples; use one of group_by_modality and packing")
        if self.feature_cache is not None:
            enc = self.policy.vision_encoder
            if not isinstance(enc, FrozenPolicy) or enc.unfreeze_last_blocks:
                raise ValueError("feature_cache needs a fully frozen vision encoder (policy.vision_encoder: frozen)")
        return self

    @property
    def has_length(self) -> bool:
        return (self.max_steps is None) != (self.epochs is None)


RUN_LEVEL_FIELDS = ("mixed_precision", "trackers")
"""``training`` fields that apply to the whole run and cannot differ between stages."""


class PartialSection(StrictModel):
    """A section whose fields are all optional; only the keys that were written are kept (and dumped)."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: Any) -> Any:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


def partial_fields(cls: type[StrictModel], replace: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cls``'s fields, each optional with default ``None`` (constraints and docs kept), for ``create_model``.

    ``replace`` maps a field name to the (annotation) to use instead, e.g. a partial nested section.
    """
    replace = replace or {}
    out: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        annotation = replace.get(name, field.annotation)
        info = FieldInfo.merge_field_infos(field, default=None, default_factory=None)
        out[name] = (Optional[annotation], info)  # noqa: UP045
    return out


PartialPolicyConfig = create_model("PartialPolicyConfig", __base__=PartialSection, __doc__=(
    "Module policies a stage changes; modules it does not name keep the policy of ``training.policy``."),
    **partial_fields(PolicyConfig))


def merge_training(base: TrainingConfig, override: PartialSection | None) -> dict[str, Any]:
    """``base`` with the keys set in ``override`` (a partial ``training``) applied, as a plain dict.

    Module policies are replaced as a whole; ``policy.modules`` entries merge by path; setting ``max_steps`` or
    ``epochs`` clears the other.
    """
    merged = base.model_dump()
    merged["policy"] = {k: v for k, v in base.policy.__dict__.items()}
    if override is None:
        return merged
    over = {k: getattr(override, k) for k in override.model_fields_set if k in TrainingConfig.model_fields}
    if "max_steps" in over or "epochs" in over:
        merged["max_steps"] = merged["epochs"] = None
    policy = over.pop("policy", None)
    merged.update(over)
    if policy is not None:
        for key in policy.model_fields_set:
            value = getattr(policy, key)
            if key == "modules":
                merged["policy"]["modules"] = {**merged["policy"]["modules"], **(value or {})}
            else:
                merged["policy"][key] = value
    return merged
