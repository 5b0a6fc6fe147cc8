"""``mmfw data check`` / ``mmfw data show`` without the CLI: run every sample through the real data pipeline.

:func:`load_data_pipeline` gives the tokenizer and image strategy of an experiment without building the model (the
vision encoder and connector are built on the meta device just to learn the image geometry). :func:`check_dataset`
loads every sample the way training does (images decoded, conversation tokenized, truncation applied) and collects
every problem, the untruncated sequence lengths and the truncations, without stopping at the first bad record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmfw.data.dataset import LlavaDataset
from mmfw.data.report import SkippedSample, TruncatedSample, summarize_skips

if TYPE_CHECKING:
    from mmfw.config.data import DataConfig, DatasetSpec
    from mmfw.config.experiment import ExperimentConfig
    from mmfw.config.kinds import Registries
    from mmfw.image_strategies.base import ImageStrategy

logger = logging.getLogger(__name__)

__all__ = ["DatasetCheck", "check_dataset", "load_data_pipeline", "open_dataset"]


def load_data_pipeline(cfg: ExperimentConfig, registries: Registries) -> tuple[Any, ImageStrategy]:
    """The tokenizer (with the image token added) and the image strategy of ``cfg``, without building the LLM."""
    from mmfw.model.builder import build_image_strategy, load_tokenizer

    return load_tokenizer(cfg.model, registries), build_image_strategy(cfg.model, registries, device="cpu")


def open_dataset(data: DataConfig, specs: Sequence[DatasetSpec], tokenizer: Any, strategy: ImageStrategy, *,
                 image_token: str, name: str, image_markers: tuple[str, str] | None = None) -> LlavaDataset:
    """The dataset of ``specs`` with the length and truncation settings of ``data``, skipping (not raising) bad
    records and with no skip limit (not even at 100%), so that every problem can be listed."""
    return LlavaDataset(specs, tokenizer, strategy, image_token=image_token, image_markers=image_markers,
                        max_length=data.max_length,
                        system_prompt=data.system_prompt, on_error="skip", truncation=data.truncation,
                        max_skip_ratio=None, name=name, allow_empty=True)


def _quantile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found in one dataset."""

    name: str
    max_length: int
    truncation: str
    records: int = 0
    problems: list[SkippedSample] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    """Untruncated length (text + image tokens) of every sample that could be tokenized."""
    truncated: list[TruncatedSample] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.records - len(self.problems)

    def problem_lines(self) -> list[str]:
        """One line per bad record: ``name: location: [reason] message``."""
        return [f"{self.name}: {p.describe()}" for p in self.problems]

    def summary_lines(self) -> list[str]:
        bad = f", {len(self.problems)} with problems ({summarize_skips(self.problems)})" if self.problems else ""
        lines = [f"{self.name}: {self.records} records, {self.usable} usable{bad}"]
        if self.lengths:
            v = sorted(self.lengths)
            lines.append(f"  tokens per sample (text + image): min {v[0]}, median {_quantile(v, 0.5)}, "
                         f"p90 {_quantile(v, 0.9)}, p99 {_quantile(v, 0.99)}, max {v[-1]} ({len(v)} samples)")
            lines.extend(_histogram(v, self.max_length))
        over = sum(1 for n in self.lengths if n > self.max_length)
        dropped = Counter(p.reason for p in self.problems
                          if p.num_tokens is not None and p.num_tokens > self.max_length)
        parts = [f"{len(self.truncated)} shortened"] + [f"{n} skipped ({r})" for r, n in sorted(dropped.items())]
        lines.append(f"  longer than data.max_length {self.max_length}: {over}"
                     + (f" (data.truncation {self.truncation}: {', '.join(parts)})" if over else ""))
        return lines


def _histogram(values: Sequence[int], max_length: int, bins: int = 8, width: int = 30) -> list[str]:
    lo, hi = values[0], max(values[-1], 1)
    if lo == hi:
        return []
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = Counter((n - lo) // step for n in values)
    top = max(counts.values())
    out = []
    for b in range(bins):
        a = lo + b * step
        if a > hi:
            break
        n = counts.get(b, 0)
        mark = " > max_length" if a > max_length else ""
        out.append(f"    {a:>6}-{a + step - 1:<6} {n:>7} {'#' * round(width * n / top)}{mark}")
    return out


def check_dataset(dataset: LlavaDataset, limit: int | None = None, progress: bool = False) -> DatasetCheck:
    """Load every sample of ``dataset`` (the first ``limit``) and collect problems, lengths and truncations."""
    from tqdm.auto import tqdm

    result = DatasetCheck(dataset.name, dataset.max_length, dataset.truncation)
    result.problems.extend(dataset.skipped)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    result.records = len(dataset.skipped) + n
    for i in tqdm(range(n), desc=dataset.name, disable=not progress, leave=False):
        item = dataset.inspect(i)
        if isinstance(item, SkippedSample):
            result.problems.append(item)
            if item.num_tokens is not None:
                result.lengths.append(item.num_tokens)
            continue
        result.lengths.append(item["num_tokens"])
        if item["truncated"] is not None:
            result.truncated.append(item["truncated"])
    return result
