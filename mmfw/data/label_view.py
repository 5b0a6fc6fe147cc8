"""A sample's label mask made visible: its tokens decoded, the supervised spans in ``[[...]]`` (``mmfw data show``).

Re-exported by :mod:`mmfw.data.tokenize`, whose :func:`~mmfw.data.tokenize.encode_conversation` makes the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmfw.errors import IGNORE_INDEX

__all__ = ["render_supervision"]


def render_supervision(input_ids: Sequence[int], labels: Sequence[int], tokenizer: Any, *,
                       image_token: str | None = None) -> str:
    """Decode a sample with its supervised spans wrapped in ``[[...]]`` (for eyeballing label masks).

    With ``image_token``, each run of image tokens is shown once as ``<image>×N``.
    """
    ids = [int(x) for x in input_ids]
    labs = [int(x) for x in labels]
    if len(ids) != len(labs):
        raise ValueError(f"input_ids ({len(ids)}) and labels ({len(labs)}) differ in length")
    tid = tokenizer.convert_tokens_to_ids(image_token) if image_token is not None else None
    parts: list[str] = []
    prev = ""  # decoded text of ids[:i]; pieces are taken as differences so that leading spaces survive
    i = 0
    while i < len(ids):
        is_image = tid is not None and ids[i] == tid
        sup = labs[i] != IGNORE_INDEX
        j = i
        while j < len(ids) and ((tid is not None and ids[j] == tid) == is_image
                                and (is_image or (labs[j] != IGNORE_INDEX) == sup)):
            j += 1
        decoded = tokenizer.decode(ids[:j], skip_special_tokens=False)
        piece = decoded[len(prev):] if decoded.startswith(prev) else tokenizer.decode(ids[i:j],
                                                                                      skip_special_tokens=False)
        prev = decoded
        if is_image:
            parts.append(f"{image_token}×{j - i}")
        else:
            parts.append(f"[[{piece}]]" if sup else piece)
        i = j
    return "".join(parts)
