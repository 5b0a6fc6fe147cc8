"""Checks of an experiment config that build the model on the meta device, run before any weights are loaded or any
data is read (``mmfw train`` and ``mmfw data check`` run them first).

Above the model layer: the checks build components, which the config layer cannot. They include the file checks of
:mod:`mmfw.config.validate`, then, cheaply:

* **geometry**: the vision encoder, connector and image strategy are built on the meta device (no memory, no
  weights; a ViT-L takes well under a second) to learn how many tokens one image becomes, which is compared with
  ``data.max_length`` and the LLM's maximum sequence length; errors the components raise on construction (an anyres
  pinpoint that is not a multiple of the tile size, ...) are reported here with their YAML path;
* **policies**: when a stage trains LoRA adapters or names sub-modules, the whole model is built on the meta device
  and every stage's policy is checked against it (a LoRA target that matches no module, ...).

Every problem is one ``"yaml.path: message"`` line. :func:`validate_experiment` returns them;
:func:`check_experiment` raises them as one :class:`~mmfw.errors.ConfigError`. A check is a function
``(ValidationContext) -> Iterable[str]``; :data:`DEFAULT_CHECKS` lists the built-in ones and callers may pass more
(e.g. one that looks up module names in :meth:`ValidationContext.meta_model`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from mmfw.config.input_checks import INPUT_CHECKS
from mmfw.config.validate import ConfigContext, check_data_files, check_model_sources, data_sections
from mmfw.errors import ConfigError
from mmfw.model.builder import build_component, build_model, llm_geometry, load_tokenizer, vision_geometry
from mmfw.training.policy import trainable_parameter_counts

if TYPE_CHECKING:
    from mmfw.config.experiment import ExperimentConfig
    from mmfw.config.kinds import Registries
    from mmfw.image_strategies.base import ImageStrategy
    from mmfw.specs import LLMGeometry

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHECKS", "ValidationContext", "check_experiment", "check_token_budget", "check_training_policies",
           "max_image_tokens", "validate_experiment"]

Check = Callable[["ValidationContext"], Iterable[str]]


class ValidationContext(ConfigContext):
    """The config under validation and lazily built, cached facts about it (shared by all checks)."""

    def __init__(self, cfg: ExperimentConfig, registries: Registries) -> None:
        super().__init__(cfg, registries)
        self.build_problems: list[str] = []
        """Problems raised by components while they were built on the meta device."""

    # -- geometry ---------------------------------------------------------------------------------------------------
    @cached_property
    def llm_geometry(self) -> LLMGeometry | None:
        """Hidden size and maximum sequence length of the LLM (:meth:`LanguageModel.geometry`), or None if unknown."""
        return llm_geometry(self.cfg.model, self.registries)

    @property
    def max_positions_path(self) -> str:
        """YAML path of where the LLM's maximum sequence length comes from."""
        return f"model.llm.{self.llm_geometry.max_positions_source}"

    @cached_property
    def image_strategy(self) -> ImageStrategy | None:
        """The image strategy built on the meta device with its real geometry, or None if that is not possible
        cheaply (an encoder that loads weights, an LLM config that is not available offline) or the build failed
        (then :attr:`build_problems` says why). Taken from :meth:`meta_model` when that builds."""
        model = self.meta_model()
        return model.image_strategy if model is not None else self.build_image_strategy(device="meta")

    def build_image_strategy(self, device: str = "meta") -> ImageStrategy | None:
        """Vision encoder and connector on the meta device, then the image strategy on ``device``."""
        model = self.cfg.model
        llm = self.llm_geometry
        if llm is None or model.vision_encoder.loads_weights:
            return None
        try:
            with torch.device("meta"):
                vision = build_component(self.registries, "vision_encoder", model.vision_encoder)
        except ConfigError as e:
            self.build_problems.extend(e.problems)
            return None
        except Exception as e:  # e.g. a plugin encoder that needs files: skip the geometry checks
            logger.debug("cannot build the vision encoder on the meta device: %s", e)
            return None
        connector = self._build("connector", model.connector, in_dim=vision.embed_dim, out_dim=llm.hidden_size)
        if connector is None:
            return None
        return self._build("image_strategy", model.image_strategy, device=device,
                           geometry=vision_geometry(vision, connector), hidden_size=llm.hidden_size)

    def _build(self, key: str, cfg: Any, device: str = "meta", **deps: Any) -> Any | None:
        """The component on ``device``; the config error it raises (located at ``model.<key>`` by
        :func:`~mmfw.model.builder.build_component`) becomes a problem."""
        try:
            with torch.device(device):
                return build_component(self.registries, key, cfg, **deps)
        except ConfigError as e:
            self.build_problems.extend(e.problems)
        return None

    @cached_property
    def max_image_tokens(self) -> int | None:
        """The most tokens one image can become (:meth:`ImageStrategy.max_tokens`, ``model.fusion``'s start/end
        markers included), or None if unknown."""
        strategy = self.image_strategy
        return None if strategy is None else self.cfg.model.fusion.image_sequence_length(strategy.max_tokens())

    def meta_model(self) -> Any | None:
        """The whole VLM built on the meta device (shapes and module names, no memory), or None when that is not
        cheap: a component loads pretrained weights, or the LLM's tokenizer is not there yet."""
        if "_meta_model" in self.__dict__:
            return self.__dict__["_meta_model"]
        model = None
        if not any(c.loads_weights for c in self.cfg.model.components().values()):
            try:
                tokenizer = load_tokenizer(self.cfg.model, self.registries)
                with torch.device("meta"):
                    model, _ = build_model(self.cfg.model, self.registries, tokenizer=tokenizer)
            except Exception as e:  # the build problems themselves are reported by check_token_budget
                logger.debug("cannot build the model on the meta device: %s", e)
        self.__dict__["_meta_model"] = model
        return model

    def meta_llm(self) -> Any | None:
        """The LLM component built on the meta device (for checks that need its module names), or None when it
        cannot be built cheaply (pretrained weights, or its tokenizer is not there yet). The LLM of
        :meth:`meta_model` when that builds (the whole model is built once per validation)."""
        model = self.meta_model()
        if model is not None:
            return model.llm
        llm = self.cfg.model.llm
        if llm.loads_weights:
            return None
        try:
            tokenizer = self.registries.llms.get(llm.type).load_tokenizer(llm)
            with torch.device("meta"):
                return self.registries.llms.build(llm, tokenizer=tokenizer)
        except Exception as e:
            logger.debug("cannot build the LLM on the meta device: %s", e)
            return None


def max_image_tokens(strategy: ImageStrategy) -> int:
    """The most tokens one image becomes with ``strategy`` (:meth:`ImageStrategy.max_tokens`)."""
    return strategy.max_tokens()


# -- checks -------------------------------------------------------------------------------------------------------
def check_token_budget(ctx: ValidationContext) -> Iterator[str]:
    """Components build; one image fits in ``data.max_length`` and the LLM's context; ``data.max_length`` fits in
    the LLM's context."""
    tokens = ctx.max_image_tokens
    yield from ctx.build_problems
    strategy_type = ctx.cfg.model.image_strategy.type
    llm = ctx.llm_geometry
    if llm is not None and llm.max_positions is not None and tokens is not None and tokens >= llm.max_positions:
        yield (f"{ctx.max_positions_path}: the LLM's maximum sequence length {llm.max_positions} is smaller "
               f"than one image's tokens (up to {tokens} with model.image_strategy {strategy_type!r})")
    for section in data_sections(ctx.cfg):
        if "max_length" not in section.keys:
            continue
        max_length, where = section.data.max_length, f"{section.path}.max_length"
        if tokens is not None and tokens >= max_length:
            yield (f"{where}: {max_length} leaves no room for text: one image becomes up to {tokens} tokens "
                   f"(model.image_strategy {strategy_type!r} with this encoder and connector); raise it or use "
                   "fewer tokens per image")
        if llm is not None and llm.max_positions is not None and max_length > llm.max_positions:
            yield (f"{where}: {max_length} exceeds the LLM's maximum sequence length {llm.max_positions} "
                   f"({ctx.max_positions_path})")


def check_training_policies(ctx: ValidationContext) -> Iterator[str]:
    """Per-module policies fit the model: LoRA target modules and ``modules`` paths exist (checked on the model
    built on the meta device; only when a policy names LoRA targets or sub-modules)."""
    stages = [(f"stages[{s.index}] ({s.name}): ", s.training.policy) for s in ctx.cfg.stage_plan()]
    if not any(p.modules or any(pol.type == "lora" for pol in p.components().values())
               for _, p in stages):
        return
    model = ctx.meta_model()
    if model is None:
        return
    seen: set[str] = set()
    for prefix, policy in stages:
        try:
            trainable_parameter_counts(model, policy)
        except ConfigError as e:
            for problem in e.problems:
                if problem not in seen:  # a policy inherited by several stages is reported once
                    seen.add(problem)
                    yield problem if len(stages) == 1 or not ctx.cfg.stages else prefix + problem


DEFAULT_CHECKS: tuple[Check, ...] = (check_data_files, check_model_sources, *INPUT_CHECKS, check_token_budget,
                                     check_training_policies)


def validate_experiment(cfg: ExperimentConfig, registries: Registries, checks: Sequence[Check] = DEFAULT_CHECKS,
                        context: ValidationContext | None = None) -> list[str]:
    """Every problem the ``checks`` find, one ``"yaml.path: message"`` line each (empty when all is well).

    ``context``: the :class:`ValidationContext` of ``cfg`` to check with, for a caller that reuses what the checks
    built (``mmfw train`` hands its meta-device model to the policy pre-check); a new one by default."""
    if context is not None and context.cfg is not cfg:
        raise ValueError("the validation context belongs to another config")
    ctx = context if context is not None else ValidationContext(cfg, registries)
    problems: list[str] = []
    for check in checks:
        for p in check(ctx):
            if p not in problems:
                problems.append(p)
    return problems


def check_experiment(cfg: ExperimentConfig, registries: Registries, source: str | None = None,
                     checks: Sequence[Check] = DEFAULT_CHECKS, context: ValidationContext | None = None,
                     ) -> ExperimentConfig:
    """``cfg`` if :func:`validate_experiment` finds nothing; else a :class:`ConfigError` listing every problem."""
    problems = validate_experiment(cfg, registries, checks, context)
    if problems:
        raise ConfigError(problems, source=source)
    return cfg
