"""Answer normalisation for exact-match scoring, shared by the data that writes answers and the evaluation that
scores them."""

from __future__ import annotations

import re

__all__ = ["normalize_answer"]


def normalize_answer(text: str) -> str:
    """Normalise an answer for exact-match scoring.

    Lowercases, strips surrounding whitespace and trailing punctuation, and collapses internal whitespace runs
    to a single space: ``"  Top   Left.\\n"`` -> ``"top left"``.
    """
    text = " ".join(text.lower().split())
    text = re.sub(r"[\s.,!?;:'\"]+$", "", text)
    return text.strip()
