"""Hooks of the ``mmfw_synth`` lmms-eval task: the image, the question as written in the eval set, and exact match
with :func:`mmfw.data.synth.normalize_answer` (the normalisation of mmfw's own evaluation)."""

from __future__ import annotations

from typing import Any

from mmfw.data.synth import normalize_answer


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    return doc["question"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"exact_match": float(normalize_answer(results[0]) == normalize_answer(doc["answer"]))}
