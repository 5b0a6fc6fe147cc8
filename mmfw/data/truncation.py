"""Fit an encoded sample into ``data.max_length`` without ever cutting inside an image's tokens.

An image's features are spliced in whole by the fusion layer, so a sample whose cut falls inside an image's tokens
would either crash there or, worse, shift every later feature row (transformers #37222, TRL #5927). Three policies
(``data.truncation``):

``drop-sample``
    A sample longer than ``max_length`` is skipped (``too-long``).
``drop-turns`` (default)
    Whole trailing turns are removed: the sample is cut just after the last assistant turn that still fits, which is
    exactly the conversation rendered up to that turn (images of removed turns go with them). If not even the first
    reply fits, the sample is skipped (``too-long``).
``cut-text``
    The tokens are cut at ``max_length``; when that point falls inside an image's tokens, the cut moves back to the
    image's first token, so that image and everything after it is dropped. Only text (and whole images) is lost.

A sample left with no supervised token is skipped (``no-supervised-tokens``) whatever the policy. Skips raise
:class:`~mmfw.data.errors.RecordError`; the caller decides whether to skip or stop (``data.on_error``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from mmfw.data.errors import RecordError
from mmfw.data.tokenize import EncodedSample

__all__ = ["TRUNCATION_POLICIES", "Truncated", "TruncationPolicy", "truncate"]

TruncationPolicy = Literal["drop-sample", "drop-turns", "cut-text"]
TRUNCATION_POLICIES: tuple[str, ...] = get_args(TruncationPolicy)


@dataclass(frozen=True)
class Truncated:
    """The sample that fits, how many of its images it keeps (the first ``num_images``), and whether it was cut."""

    sample: EncodedSample
    num_images: int
    truncated: bool


def _cut(enc: EncodedSample, length: int) -> Truncated:
    spans = [s for s in enc.image_spans if s[1] <= length]
    out = EncodedSample(enc.input_ids[:length], enc.labels[:length], image_spans=spans,
                        turn_ends=[e for e in enc.turn_ends if e <= length])
    return Truncated(out, len(spans), truncated=length < len(enc))


def truncate(enc: EncodedSample, max_length: int, policy: TruncationPolicy, sample_id: str = "<sample>") -> Truncated:
    """Apply ``policy`` to ``enc`` (see the module docstring).

    Raises:
        RecordError: ``too-long`` when the policy cannot make the sample fit, ``no-supervised-tokens`` when nothing
            supervised is left.
        ValueError: an unknown policy or a non-positive ``max_length``.
    """
    if policy not in TRUNCATION_POLICIES:
        raise ValueError(f"unknown truncation policy {policy!r}; expected one of {list(TRUNCATION_POLICIES)}")
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    n = len(enc)
    if n <= max_length:
        result = Truncated(enc, len(enc.image_spans), truncated=False)
    elif policy == "drop-sample":
        raise RecordError("too-long", f"sample {sample_id!r} has {n} tokens > data.max_length {max_length} "
                                      "(data.truncation: drop-sample)")
    elif policy == "drop-turns":
        fitting = [e for e in enc.turn_ends if e <= max_length]
        if not fitting:
            first = min(enc.turn_ends) if enc.turn_ends else n
            raise RecordError("too-long", f"sample {sample_id!r} has {n} tokens > data.max_length {max_length} and "
                                          f"even its first reply ends at token {first} "
                                          "(data.truncation: drop-turns)")
        result = _cut(enc, max(fitting))
    else:  # cut-text
        cut = max_length
        for start, end in enc.image_spans:
            if start < cut < end:
                cut = start
                break
        result = _cut(enc, cut)
    if result.sample.num_supervised == 0:
        what = f"after truncation to {len(result.sample)} tokens ({policy}) " if result.truncated else ""
        raise RecordError("no-supervised-tokens", f"sample {sample_id!r} has no supervised token {what}"
                                                  "(nothing to learn from)")
    return result
