"""Checks of an experiment config against the file system, run before anything is built or read.

The schema (:mod:`mmfw.config.loader`) catches unknown types and keys, wrong value types and what one config
section can check on its own. The checks here need several sections or the file system, but nothing above the
config layer:

* **files**: every dataset file (of ``data`` and of each stage's own ``stages[i].data``) exists, unless
  ``data.synthetic`` will generate it, and every ``image_root`` is a directory;
* **sources**: a component's local ``pretrained`` / ``tokenizer`` paths (:meth:`ComponentConfig.sources`) exist,
  unless ``data.build_tokenizer`` will write them (hub ids are not looked up).

The checks that build the model on the meta device (token budget, policies) are in :mod:`mmfw.training.validate`,
which runs these too. A check is a function ``(context) -> Iterable[str]`` yielding ``"yaml.path: message"`` lines.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmfw.config.data import DataConfig, DatasetSpec
    from mmfw.config.experiment import ExperimentConfig
    from mmfw.config.kinds import Registries

__all__ = ["ConfigContext", "DataSection", "check_data_files", "check_model_sources", "data_sections"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
    if cfg.stages:
        plan = cfg.stage_plan()
        for i, stage in enumerate(cfg.stages):
            if stage.data is not None and stage.data.model_fields_set:
                out.append(DataSection(f"stages[{i}].data", plan[i].data, frozenset(stage.data.model_fields_set)))
    return out


class ConfigContext:
    """The config under validation and what the run will generate before reading it (shared by all checks)."""

    def __init__(self, cfg: ExperimentConfig, registries: Registries) -> None:
        self.cfg = cfg
        self.registries = registries

    @cached_property
    def generated_dirs(self) -> list[Path]:
        """Directories the run writes before it reads them (``data.synthetic``, ``data.build_tokenizer``)."""
        d = self.cfg.data
        return [Path(x.out_dir).resolve() for x in (d.synthetic, d.build_tokenizer) if x is not None]

    def is_generated(self, path: str | Path) -> bool:
        p = Path(path).resolve()
        return any(p == g or g in p.parents for g in self.generated_dirs)


def check_data_files(ctx: ConfigContext) -> Iterator[str]:
    """Dataset files exist and are files; image roots are directories (paths the run generates excepted)."""
    for section in data_sections(ctx.cfg):
        yield from _check_files(ctx, section)


def _check_files(ctx: ConfigContext, section: DataSection) -> Iterator[str]:
    for split in ("train", "eval"):
        if split not in section.keys:
            continue
        for i, spec in enumerate(getattr(section.data, split)):
            where = f"{section.path}.{split}[{i}]"
            path = Path(spec.path)
            if spec.streamed and not ctx.is_generated(path):
                yield from _check_streamed(spec, where)
            elif not ctx.is_generated(path):
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


def _check_streamed(spec: DatasetSpec, where: str) -> Iterator[str]:
    """A WebDataset path is a .tar file, a directory of them or a glob that matches; a Hugging Face one a directory."""
    path = Path(spec.path)
    if spec.kind == "webdataset" and any(c in spec.path for c in "*?["):
        if not glob.glob(spec.path):
            yield f"{where}.path: no shard matches {spec.path}"
    elif not path.exists():
        yield f"{where}.path: {'shard' if spec.kind == 'webdataset' else 'dataset directory'} not found: {spec.path}"
    elif spec.kind == "hf" and not path.is_dir():
        yield f"{where}.path: not a Hugging Face dataset directory: {spec.path}"


def _is_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~"))


def check_model_sources(ctx: ConfigContext) -> Iterator[str]:
    """Local paths the components read (:meth:`ComponentConfig.sources`) exist (hub ids are not looked up)."""
    for key, cfg in ctx.cfg.model.components().items():
        for field, value in cfg.sources().items():
            if ctx.is_generated(value):
                continue
            if not Path(value).expanduser().exists() and not _is_hub_id(value):
                yield f"model.{key}.{field}: not found: {value} (neither a local path nor a Hugging Face hub id)"
