"""Accounting of skipped and truncated samples: counted by reason, reported with the first few ids, bounded.

With ``data.on_error: skip`` a bad sample does not stop training, but it never disappears silently either:

* records that fail validation are found when the dataset is built (:attr:`LlavaDataset.skipped
  <mmfw.data.dataset.LlavaDataset.skipped>`);
* samples that fail when loaded (a missing or corrupt image, a chat-template mismatch, too long, nothing supervised)
  come out of ``dataset[i]`` as a :class:`SkippedSample` instead of an item. The collator drops them from the batch
  and lists them under ``batch["skipped"]`` (and truncated ones under ``batch["truncated"]``), so the accounting
  happens in the training process even when samples are loaded in DataLoader workers, and is deterministic: it
  depends only on the data, never on timing.

:class:`DataReport` is what a training loop keeps per dataset: :meth:`DataReport.observe` each batch (it raises
:class:`~mmfw.data.errors.TooManySkippedError` as soon as more than ``max_skip_ratio`` of the dataset's records are
known to be unusable, so a broken ``image_root`` stops the run after one batch, not one epoch) and
:meth:`DataReport.end_epoch` at the end of every epoch (it logs the counts by reason with the first few ids and
returns them as metrics).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmfw.data.errors import RecordError, TooManySkippedError

if TYPE_CHECKING:
    from mmfw.data.batch import VLMBatch

logger = logging.getLogger(__name__)

__all__ = ["DataReport", "SkippedSample", "TruncatedSample", "is_skipped", "summarize_skips"]


@dataclass(frozen=True)
class SkippedSample:
    """A record or sample left out, and why.

    ``location`` is ``file:line`` for JSONL and ``file[index]`` for JSON; ``index`` the dataset index for samples
    skipped when loaded (``None`` for records rejected when the dataset was built); ``num_tokens`` the untruncated
    length when it is known.
    """

    location: str
    id: str | None
    reason: str
    message: str
    index: int | None = None
    num_tokens: int | None = None

    @classmethod
    def from_error(cls, error: RecordError, location: str, id: str | None = None, index: int | None = None,
                   num_tokens: int | None = None) -> SkippedSample:
        message = error.message
        for prefix in (f"{location}: ", f"{location} "):
            message = message.removeprefix(prefix)
        return cls(location, id, error.reason_code, message, index, num_tokens)

    def describe(self) -> str:
        """One line: ``location: [reason] message``."""
        return f"{self.location}: [{self.reason}] {self.message}"

    def to_error(self) -> RecordError:
        return RecordError(self.reason, f"{self.location}: {self.message}")


@dataclass(frozen=True)
class TruncatedSample:
    """A sample shortened to fit ``data.max_length``: its id, dataset index, policy and lengths before and after."""

    id: str
    index: int
    policy: str
    num_tokens: int
    kept_tokens: int


def is_skipped(item: Any) -> bool:
    return isinstance(item, SkippedSample)


def summarize_skips(skips: Sequence[SkippedSample], max_ids: int = 5) -> str:
    """``"missing-image: 3 (ids 'a', 'b', 'c'), bad-json: 1 (train.jsonl:7)"``, most frequent reason first; within
    a reason, samples in dataset order."""
    by_reason: dict[str, list[SkippedSample]] = {}
    for s in skips:
        by_reason.setdefault(s.reason, []).append(s)
    parts = []
    for reason, items in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        items = sorted(items, key=_order)
        shown = ", ".join(repr(s.id) if s.id is not None else s.location for s in items[:max_ids])
        more = ", ..." if len(items) > max_ids else ""
        parts.append(f"{reason}: {len(items)} ({shown}{more})")
    return ", ".join(parts)


def _order(s: SkippedSample) -> tuple[int, int, str]:
    return (0 if s.index is None else 1, s.index or 0, s.location)


class DataReport:
    """Skips and truncations of one dataset, per epoch (see the module docstring).

    Args:
        total: Records in the dataset's files, usable or not (``len(dataset) + len(dataset.skipped)``).
        static: Records rejected when the dataset was built; they count in every epoch.
        max_skip_ratio: Largest allowed share of skipped records per epoch; ``None`` for no limit.
        name: How the dataset is named in messages (its YAML path, e.g. ``"data.train"``).
        max_ids: How many ids to show per reason.
    """

    def __init__(self, total: int, static: Sequence[SkippedSample] = (), max_skip_ratio: float | None = None,
                 name: str = "dataset", max_ids: int = 5) -> None:
        self.total, self.static = total, list(static)
        self.max_skip_ratio, self.name, self.max_ids = max_skip_ratio, name, max_ids
        self.epoch = 0
        self._reset()

    @classmethod
    def for_dataset(cls, dataset: Any, max_skip_ratio: float | None = None, name: str | None = None) -> DataReport:
        """A report for a :class:`~mmfw.data.dataset.LlavaDataset` (its ``name`` and parse-time skips)."""
        skipped = list(getattr(dataset, "skipped", []))
        return cls(total=len(dataset) + len(skipped), static=skipped, max_skip_ratio=max_skip_ratio,
                   name=name or getattr(dataset, "name", "dataset"))

    def _reset(self) -> None:
        self.skipped: list[SkippedSample] = []
        self.truncated: list[TruncatedSample] = []
        self.samples_seen = 0

    # -- recording ----------------------------------------------------------------------------------------------
    def observe(self, batch: VLMBatch) -> bool:
        """Record a collated batch's skipped and truncated samples; True if it still has rows to train on.

        Raises:
            TooManySkippedError: more than ``max_skip_ratio`` of the dataset is now known to be unusable.
        """
        self.record(batch.skipped, batch.truncated, batch.num_samples + len(batch.skipped))
        return batch.rows > 0

    def record(self, skipped: Iterable[SkippedSample] = (), truncated: Iterable[TruncatedSample] = (),
               samples: int = 0) -> None:
        """Add skipped and truncated samples and the number of samples they came from."""
        self.skipped.extend(skipped)
        self.truncated.extend(truncated)
        self.samples_seen += samples
        self.check()

    def check(self) -> None:
        """Raise :class:`TooManySkippedError` if the skips already exceed ``max_skip_ratio`` of the dataset."""
        if self.max_skip_ratio is None or self.total == 0:
            return
        n = len(self.static) + len(self.skipped)
        if n > self.max_skip_ratio * self.total:
            raise TooManySkippedError(
                f"{self.name}: {n} of {self.total} samples ({n / self.total:.1%}) are unusable, more than "
                f"data.max_skip_ratio={self.max_skip_ratio:g}: {summarize_skips(self.all_skipped, self.max_ids)}. "
                "Run `mmfw data check CONFIG` to list every problem")

    # -- reporting ----------------------------------------------------------------------------------------------
    @property
    def all_skipped(self) -> list[SkippedSample]:
        """Parse-time and load-time skips of the current epoch."""
        return self.static + self.skipped

    def metrics(self) -> dict[str, float]:
        """Counts of the current epoch: ``data/skipped``, ``data/skipped/<reason>``, ``data/truncated``."""
        skips = self.all_skipped
        out: dict[str, float] = {"data/skipped": float(len(skips)), "data/truncated": float(len(self.truncated))}
        for reason, n in sorted(Counter(s.reason for s in skips).items()):
            out[f"data/skipped/{reason}"] = float(n)
        return out

    def summary(self) -> str:
        skips = self.all_skipped
        parts = [f"{self.name} epoch {self.epoch}: {self.samples_seen} samples loaded"]
        if skips:
            parts.append(f"{len(skips)} skipped ({summarize_skips(skips, self.max_ids)})")
        if self.truncated:
            by_policy = Counter(t.policy for t in self.truncated)
            ids = ", ".join(repr(t.id) for t in sorted(self.truncated, key=lambda t: t.index)[:self.max_ids])
            more = ", ..." if len(self.truncated) > self.max_ids else ""
            parts.append(f"{len(self.truncated)} truncated ("
                         + ", ".join(f"{p}: {n}" for p, n in sorted(by_policy.items())) + f"; {ids}{more})")
        return "; ".join(parts)

    def end_epoch(self) -> dict[str, float]:
        """Log this epoch's summary, return its :meth:`metrics` and start counting the next epoch."""
        metrics = self.metrics()
        if self.all_skipped or self.truncated:
            logger.warning("%s", self.summary())
        else:
            logger.info("%s", self.summary())
        self.epoch += 1
        self._reset()
        return metrics
