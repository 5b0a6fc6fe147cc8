"""Evaluation on a held-out split: loss over the supervised tokens and exact-match accuracy of generated answers."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from mmfw.data.answers import normalize_answer
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.data.errors import DataError
from mmfw.data.report import is_skipped
from mmfw.model.vlm import VisionLanguageModel

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
"""Written into the run directory by every evaluation that generates: one JSON object per scored question."""


class NoUsableSamplesError(DataError):
    """An evaluation set none of whose samples can be used."""


def _resolve(dataset: LlavaDataset | Subset, index: int) -> tuple[LlavaDataset, int]:
    """The underlying dataset and index of item ``index`` of a (possibly nested) ``Subset``."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    return dataset, index


class _PromptView(torch.utils.data.Dataset):
    """Generation prompts (up to each sample's last reply) of a dataset."""

    def __init__(self, dataset: LlavaDataset | Subset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        base, j = _resolve(self.dataset, i)
        return base.prompt_item(j)


@torch.no_grad()
def evaluate_loss(model: VisionLanguageModel, dataset: LlavaDataset, collator: VLMCollator, batch_size: int,
                  device: torch.device, should_stop: Callable[[], bool] | None = None) -> float:
    """Mean next-token loss over every supervised token of ``dataset`` (raises :class:`EvaluationStopped` at the
    first batch at which ``should_stop()`` is true)."""
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        _check_stop(should_stop)
        if batch.rows == 0:  # every sample of the batch was skipped (see mmfw.data.report)
            continue
        batch = batch.to(device)
        out = model(**batch.model_inputs(labels=True))
        n = int((batch.labels[:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    if count == 0:
        raise NoUsableSamplesError(f"data.eval: none of its {len(dataset)} sample(s) could be used (every one was "
                                   "skipped), so there is no eval loss; run `mmfw data check CONFIG --split eval` "
                                   "for the reasons")
    return total / count


def require_usable(dataset: LlavaDataset | Subset, name: str = "data.eval") -> None:
    """Raise :class:`NoUsableSamplesError` unless at least one sample of ``dataset`` loads (tried in order, so a
    good set costs one sample): checked before training, so that a run never ends with an eval over 0 samples."""
    reasons: dict[str, int] = defaultdict(int)
    for i in range(len(dataset)):
        item = dataset[i]
        if not is_skipped(item):
            return
        reasons[item.reason] += 1
    why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    raise NoUsableSamplesError(f"{name}: none of its {len(dataset)} sample(s) can be used ({why}); fix the data or "
                               f"remove {name} (run `mmfw data check CONFIG --split eval` for every problem)")


@torch.no_grad()
def evaluate_accuracy(model: VisionLanguageModel, tokenizer: Any, dataset: LlavaDataset, batch_size: int,
                      max_new_tokens: int, device: torch.device,
                      predictions: list[dict[str, Any]] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Exact match (after :func:`normalize_answer`) of greedy answers to each sample's last reply.

    Returns ``accuracy``, ``num_samples`` and ``accuracy/<task>`` for records that carry a ``task`` field. With a
    ``predictions`` list, appends one record per scored sample (see :func:`prediction_record`).
    """
    collator = VLMCollator(tokenizer.pad_token_id, padding_side="left")
    loader = DataLoader(_PromptView(dataset), batch_size=batch_size, collate_fn=lambda s: (collator(s), s))
    hits: dict[str, list[int]] = defaultdict(list)
    index = 0
    for batch, samples in loader:
        _check_stop(should_stop)
        kept = [s for s in samples if not is_skipped(s)]
        texts: list[str] = []
        if kept:
            new = model.generate(**batch.to(device).model_inputs(), max_new_tokens=max_new_tokens, do_sample=False)
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        answers = iter(texts)
        for sample in samples:
            if is_skipped(sample):  # counted by the collator's "skipped" list, not scored
                index += 1
                continue
            text = next(answers)
            ok = int(normalize_answer(text) == normalize_answer(sample["answer"]))
            hits["all"].append(ok)
            task = _task_of(dataset, index)
            if task is not None:
                hits[task].append(ok)
            if predictions is not None:
                predictions.append(prediction_record(dataset, index, text, bool(ok), task))
            index += 1
    metrics = {"accuracy": sum(hits["all"]) / max(len(hits["all"]), 1), "num_samples": float(len(hits["all"]))}
    for task, values in sorted(hits.items()):
        if task != "all":
            metrics[f"accuracy/{task}"] = sum(values) / len(values)
    return metrics


def evaluate_stage(acc: Any, model: Any, tokenizer: Any, data: Any, stage: Any, step: int, run_dir: Path,
                   generate: bool, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """A training stage's evaluation on its eval set (``data``: a :class:`~mmfw.training.loader.StageData`):
    ``eval/loss`` and, with ``generate``, ``eval/accuracy...``, whose predictions go to ``predictions.jsonl``.
    ``should_stop`` is asked before every batch: when it says so (SIGTERM, Ctrl-C), :class:`EvaluationStopped` ends
    the evaluation at once, nothing of it written."""
    model = acc.unwrap_model(model)
    model.eval()
    t = stage.training
    bs = t.eval_batch_size or t.batch_size
    metrics: dict[str, float] = {}
    try:
        with acc.autocast():
            metrics["eval/loss"] = evaluate_loss(model, data.eval_set, data.collator, bs, acc.device, should_stop)
            if generate:
                predictions: list[dict[str, Any]] = []
                scores = evaluate_accuracy(model, tokenizer, data.eval_set, bs, t.max_new_tokens, acc.device,
                                           predictions, should_stop)
                metrics.update({f"eval/{k}": v for k, v in scores.items()})
                write_predictions(run_dir / PREDICTIONS_FILE, predictions, step=step,
                                  **({} if stage.implicit else {"stage": stage.name}))
    finally:
        model.train()
    return metrics


class EvaluationStopped(Exception):
    """An evaluation ended early because a stop (SIGTERM, Ctrl-C) was requested; the trainer then stops with a
    checkpoint of the step (see :mod:`mmfw.training.signals`)."""


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise EvaluationStopped


def _task_of(dataset: LlavaDataset | Subset, index: int) -> str | None:
    base, j = _resolve(dataset, index)
    return getattr(base.conversation(j), "metadata", {}).get("task")


def prediction_record(dataset: LlavaDataset | Subset, index: int, prediction: str, correct: bool,
                      task: str | None) -> dict[str, Any]:
    """One line of ``predictions.jsonl``: the sample's id, question (its last user turn, image placeholders
    removed), reference answer, the model's answer, whether they match, its task and its image files."""
    base, j = _resolve(dataset, index)
    conv = base.conversation(j)
    question = next((m["content"] for m in reversed(conv.prompt_messages) if m["role"] == "user"), "")
    question = question.replace(base.image_token, "").strip()
    return {"id": conv.id, "question": question, "reference": conv.answers[-1], "prediction": prediction.strip(),
            "correct": correct, "task": task, "images": [str(p) for p in base.image_paths(j)]}


def write_predictions(path: str | Path, predictions: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Write ``predictions`` as JSON lines (each record updated with ``extra``, e.g. ``step``), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in predictions:
            f.write(json.dumps({**record, **extra}) + "\n")
    tmp.replace(path)
    return path


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``predictions.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
