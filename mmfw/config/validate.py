"""Checks of an experiment config beyond its schema, run before any model is built or any data is read.

The schema (:mod:`mmfw.config.loader`) catches unknown types and keys, wrong value types and what one config
section can check on its own. What needs several sections, the file system or the model's geometry is checked
here, cheaply:

* **files**: every dataset file (of ``data`` and of each stage's own ``stages[i].data``) exists, unless
  ``data.synthetic`` will generate it, and every ``image_root`` is a directory; a component's local ``pretrained`` / ``tokenizer`` directory exists (unless ``data.build_tokenizer``
  will write it; hub ids are not looked up);
* **geometry**: the vision encoder, connector and image strategy are built on the meta device (no memory, no
  weights; a ViT-L takes well under a second) to learn how many tokens one image becomes, which is compared with
  ``data.max_length`` and the LLM's maximum sequence length; errors the components raise on construction (an anyres
  pinpoint that is not a multiple of the tile size, ...) are reported here with their YAML path;
* **policies**: when a stage trains LoRA adapters or names sub-modules, the whole model is built on the meta device
  and every stage's policy is checked against it (a LoRA target that matches no module, ...).

Every problem is one ``"yaml.path: message"`` line. :func:`validate_experiment` returns them;
:func:`check_experiment` raises them as one :class:`~mmfw.config.loader.ConfigError`. A check is a function
``(ValidationContext) -> Iterable[str]``; :data:`DEFAULT_CHECKS` lists the built-in ones and callers may pass more
(e.g. one that looks up module names in :meth:`ValidationContext.meta_model`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmfw.config.input_checks import INPUT_CHECKS
from mmfw.config.loader import ConfigError

if TYPE_CHECKING:
    from mmfw.components import Registries
    from mmfw.config.experiment import DataConfig, ExperimentConfig
    from mmfw.image_strategies.base import ImageStrategy

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHECKS", "DataSection", "LLMGeometry", "ValidationContext", "check_experiment", "data_sections",
           "max_image_tokens", "validate_experiment"]

Check = Callable[["ValidationContext"], Iterable[str]]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMPONENTS = ("vision_encoder", "connector", "llm", "image_strategy")


@dataclass(frozen=True)
class DataSection:
    """One ``data`` section of a config: the top-level one, or a stage's (resolved over the top-level one).

    ``path`` is its YAML path (``"data"``, ``"stages[1].data"``); ``keys`` the keys it sets itself (every key for the
    top-level section), so that a stage is only checked for what it changes.
    """

    path: str
    data: DataConfig
    keys: frozenset[str]


def data_sections(cfg: ExperimentConfig) -> list[DataSection]:
    """The top-level ``data`` section, then every stage's own ``data`` section, in order."""
    out = [DataSection("data", cfg.data, frozenset(type(cfg.data).model_fields))]
    stages = list(getattr(cfg, "stages", None) or ())
    if stages:
        plan = cfg.stage_plan()
        for i, stage in enumerate(stages):
            partial = getattr(stage, "data", None)
            if partial is not None and partial.model_fields_set:
                out.append(DataSection(f"stages[{i}].data", plan[i].data, frozenset(partial.model_fields_set)))
    return out


@dataclass(frozen=True)
class LLMGeometry:
    """What the checks need to know about the LLM, and the YAML path each value comes from."""

    hidden_size: int
    max_positions: int | None
    max_positions_path: str


class ValidationContext:
    """The config under validation and lazily built, cached facts about it (shared by all checks)."""

    def __init__(self, cfg: ExperimentConfig, registries: Registries) -> None:
        self.cfg = cfg
        self.registries = registries
        self.build_problems: list[str] = []
        """Problems raised by components while they were built on the meta device."""

    # -- files ------------------------------------------------------------------------------------------------------
    @cached_property
    def generated_dirs(self) -> list[Path]:
        """Directories the run writes before it reads them (``data.synthetic``, ``data.build_tokenizer``)."""
        d = self.cfg.data
        return [Path(x.out_dir).resolve() for x in (d.synthetic, d.build_tokenizer) if x is not None]

    def is_generated(self, path: str | Path) -> bool:
        p = Path(path).resolve()
        return any(p == g or g in p.parents for g in self.generated_dirs)

    # -- geometry ---------------------------------------------------------------------------------------------------
    @cached_property
    def llm_geometry(self) -> LLMGeometry | None:
        """Hidden size and maximum sequence length of the LLM, from its ``architecture`` or its local config."""
        llm = self.cfg.model.llm
        arch = getattr(llm, "architecture", None)
        if arch is not None and hasattr(arch, "hidden_size"):
            return LLMGeometry(arch.hidden_size, getattr(arch, "max_position_embeddings", None),
                               "model.llm.architecture.max_position_embeddings")
        pretrained = getattr(llm, "pretrained", None)
        if isinstance(pretrained, str):
            try:
                from transformers import AutoConfig

                hf = AutoConfig.from_pretrained(pretrained, local_files_only=True,
                                                trust_remote_code=bool(getattr(llm, "trust_remote_code", False)))
                hf = getattr(hf, "get_text_config", lambda: hf)()
                return LLMGeometry(int(hf.hidden_size), getattr(hf, "max_position_embeddings", None),
                                   f"model.llm.pretrained ({pretrained}: max_position_embeddings)")
            except Exception as e:  # not available offline: nothing to check against
                logger.debug("cannot read the LLM config of %r: %s", pretrained, e)
        return None

    @cached_property
    def image_strategy(self) -> ImageStrategy | None:
        """The image strategy built on the meta device with its real geometry, or None if that is not possible
        cheaply (a pretrained encoder, an LLM config that is not available offline) or the build failed (then
        :attr:`build_problems` says why)."""
        return self.build_image_strategy(device="meta")

    def build_image_strategy(self, device: str = "meta") -> ImageStrategy | None:
        """Vision encoder and connector on the meta device, then the image strategy on ``device``."""
        from mmfw.image_strategies.base import VisionGeometry

        model = self.cfg.model
        llm = self.llm_geometry
        if llm is None or getattr(model.vision_encoder, "pretrained", None) is not None:
            return None
        regs = self.registries
        try:
            with torch.device("meta"):
                vision = regs.vision_encoders.build(model.vision_encoder)
        except ConfigError as e:
            self.build_problems.extend(e.problems)
            return None
        except Exception as e:  # e.g. a plugin encoder that needs files: skip the geometry checks
            logger.debug("cannot build the vision encoder on the meta device: %s", e)
            return None
        connector = self._build("model.connector", "meta", lambda: regs.connectors.build(
            model.connector, in_dim=vision.embed_dim, out_dim=llm.hidden_size))
        if connector is None:
            return None
        geometry = VisionGeometry(spec=vision.spec, connector_tokens=connector.num_tokens,
                                  connector_grid=connector.output_grid)
        return self._build("model.image_strategy", device, lambda: regs.image_strategies.build(
            model.image_strategy, geometry=geometry, hidden_size=llm.hidden_size))

    def _build(self, where: str, device: str, make: Callable[[], Any]) -> Any | None:
        """``make()`` on ``device``; a ConfigError or ValueError it raises becomes a problem at ``where``."""
        try:
            with torch.device(device):
                return make()
        except ConfigError as e:
            self.build_problems.extend(e.problems)
        except ValueError as e:
            msg = str(e)
            self.build_problems.append(msg if msg.startswith(f"{where}.") else f"{where}: {msg}")
        return None

    @cached_property
    def max_image_tokens(self) -> int | None:
        """The most tokens one image can become (see :func:`max_image_tokens`), or None if unknown."""
        strategy = self.image_strategy
        return None if strategy is None else max_image_tokens(strategy)

    def meta_model(self) -> Any | None:
        """The whole VLM built on the meta device (shapes and module names, no memory), or None when that is not
        cheap: a component loads pretrained weights, or the LLM's tokenizer is not there yet."""
        if "meta_model" in self.__dict__:
            return self.__dict__["meta_model"]
        model = None
        if not any(getattr(getattr(self.cfg.model, c), "pretrained", None) is not None for c in _COMPONENTS):
            try:
                from mmfw.model.builder import build_model, load_tokenizer

                tokenizer = load_tokenizer(self.cfg.model, self.registries)
                with torch.device("meta"):
                    model, _ = build_model(self.cfg.model, self.registries, tokenizer=tokenizer)
            except Exception as e:  # the build problems themselves are reported by check_token_budget
                logger.debug("cannot build the model on the meta device: %s", e)
        self.__dict__["meta_model"] = model
        return model

    def meta_llm(self) -> Any | None:
        """The LLM component built on the meta device (for checks that need its module names), or None when it
        cannot be built cheaply (pretrained weights, or its tokenizer is not there yet)."""
        llm = self.cfg.model.llm
        if getattr(llm, "pretrained", None) is not None:
            return None
        try:
            tokenizer = self.registries.llms.get(llm.type).load_tokenizer(llm)
            with torch.device("meta"):
                return self.registries.llms.build(llm, tokenizer=tokenizer)
        except Exception as e:
            logger.debug("cannot build the LLM on the meta device: %s", e)
            return None


def max_image_tokens(strategy: ImageStrategy) -> int:
    """The most tokens one image becomes with ``strategy``: the largest ``num_tokens`` over the encoder's native
    size, every grid pinpoint the strategy declares (``grid_pinpoints``, as ``(height, width)``) and a few aspect
    ratios at 4x the native size. Exact for fixed-size strategies and anyres."""
    h, w = strategy.geometry.spec.image_size
    sizes = {(w, h), (4 * w, 4 * h), (8 * w, 2 * h), (2 * w, 8 * h), (12 * w, 3 * h), (3 * w, 12 * h)}
    sizes.update((int(pw), int(ph)) for ph, pw in getattr(strategy, "grid_pinpoints", None) or ())
    return max(int(strategy.num_tokens(s)) for s in sorted(sizes))


# -- checks -------------------------------------------------------------------------------------------------------
def check_data_files(ctx: ValidationContext) -> Iterator[str]:
    """Dataset files exist and are files; image roots are directories (paths the run generates excepted)."""
    for section in data_sections(ctx.cfg):
        yield from _check_files(ctx, section)


def _check_files(ctx: ValidationContext, section: DataSection) -> Iterator[str]:
    for split in ("train", "eval"):
        if split not in section.keys:
            continue
        for i, spec in enumerate(getattr(section.data, split)):
            where = f"{section.path}.{split}[{i}]"
            path = Path(spec.path)
            if not ctx.is_generated(path):
                if not path.exists():
                    yield f"{where}.path: file not found: {spec.path}"
                elif not path.is_file():
                    yield f"{where}.path: not a file: {spec.path}"
            if spec.image_root is not None and not ctx.is_generated(spec.image_root):
                root = Path(spec.image_root)
                if not root.exists():
                    yield f"{where}.image_root: directory not found: {spec.image_root}"
                elif not root.is_dir():
                    yield f"{where}.image_root: not a directory: {spec.image_root}"


def _is_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~"))


def check_model_sources(ctx: ValidationContext) -> Iterator[str]:
    """Local ``pretrained`` / ``tokenizer`` directories of the components exist (hub ids are not looked up)."""
    for comp in _COMPONENTS:
        cfg = getattr(ctx.cfg.model, comp)
        for key in ("pretrained", "tokenizer"):
            value = getattr(cfg, key, None)
            if not isinstance(value, str) or ctx.is_generated(value):
                continue
            path = Path(value).expanduser()
            if not path.exists() and not _is_hub_id(value):
                yield f"model.{comp}.{key}: not found: {value} (neither a local path nor a Hugging Face hub id)"


def check_token_budget(ctx: ValidationContext) -> Iterator[str]:
    """Components build; one image fits in ``data.max_length`` and the LLM's context; ``data.max_length`` fits in
    the LLM's context."""
    tokens = ctx.max_image_tokens
    yield from ctx.build_problems
    strategy_type = ctx.cfg.model.image_strategy.type
    llm = ctx.llm_geometry
    if llm is not None and llm.max_positions is not None and tokens is not None and tokens >= llm.max_positions:
        yield (f"{llm.max_positions_path}: the LLM's maximum sequence length {llm.max_positions} is smaller "
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
                   f"({llm.max_positions_path})")


def check_training_policies(ctx: ValidationContext) -> Iterator[str]:
    """Per-module policies fit the model: LoRA target modules and ``modules`` paths exist (checked on the model
    built on the meta device; only when a policy names LoRA targets or sub-modules)."""
    stages = [(f"stages[{s.index}] ({s.name}): ", s.training.policy) for s in ctx.cfg.stage_plan()]
    if not any(p.modules or any(getattr(pol, "type", None) == "lora" for pol in p.components().values())
               for _, p in stages):
        return
    model = ctx.meta_model()
    if model is None:
        return
    from mmfw.training.policy import trainable_parameter_counts

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


def validate_experiment(cfg: ExperimentConfig, registries: Registries,
                        checks: Sequence[Check] = DEFAULT_CHECKS) -> list[str]:
    """Every problem the ``checks`` find, one ``"yaml.path: message"`` line each (empty when all is well)."""
    ctx = ValidationContext(cfg, registries)
    problems: list[str] = []
    for check in checks:
        for p in check(ctx):
            if p not in problems:
                problems.append(p)
    return problems


def check_experiment(cfg: ExperimentConfig, registries: Registries, source: str | None = None,
                     checks: Sequence[Check] = DEFAULT_CHECKS) -> ExperimentConfig:
    """``cfg`` if :func:`validate_experiment` finds nothing; else a :class:`ConfigError` listing every problem."""
    problems = validate_experiment(cfg, registries, checks)
    if problems:
        raise ConfigError(problems, source=source)
    return cfg
