"""Errors of the data pipeline: every one names the record and the reason, and the CLI prints it without a traceback.

* :class:`DataError` is the base (a ``ValueError``); ``mmfw`` reports it as one line per problem with exit code 2.
* :class:`RecordError` is one unusable record or sample. Its ``reason_code`` is a short slug (``"missing-image"``,
  ``"bad-json"``, ...) used to count skipped samples by cause; :data:`REASONS` lists every slug mmfw itself uses.
* :class:`TooManySkippedError` stops a run whose share of skipped samples exceeds ``data.max_skip_ratio``.
"""

from __future__ import annotations

from mmfw.errors import DataError, RecordError, TooManySkippedError

__all__ = ["REASONS", "DataError", "RecordError", "TooManySkippedError"]

#: Every reason code mmfw uses, with what it means (shown by the docs; plugins may add their own codes).
REASONS: dict[str, str] = {
    # the file / the JSON
    "bad-json": "a JSONL line that is not valid UTF-8 or not valid JSON",
    "not-an-object": "a record that is not a JSON object",
    # the record's shape
    "missing-conversations": "no 'conversations' list",
    "bad-turn": "a turn that is not an object with from/value (or role/content)",
    "bad-role": "an unknown role, or a system turn that is not the first",
    "bad-content": "a turn whose text is not a string",
    "bad-image": "an 'image'/'images' field that is not a path or a list of paths",
    "empty-conversation": "no turns (or only a system turn)",
    "starts-with-assistant": "the first turn after the optional system turn is the assistant's",
    "roles-not-alternating": "two user (or two assistant) turns in a row",
    "no-assistant-reply": "no assistant turn at all",
    "ends-with-user": "a last user turn that is never answered",
    "empty-reply": "an assistant reply that is empty or only whitespace",
    "image-in-reply": "an image placeholder inside an assistant reply",
    "image-placeholder-mismatch": "the number of <image> placeholders differs from the number of images",
    "image-outside-root": "a relative image path that leaves its image root (``../``), or an absolute one when image_root is set",
    "duplicate-id": "a record whose id an earlier record of the dataset already has (the later one is left out)",
    "missing-member": "a WebDataset sample without a .json member (the record)",
    # the images (found when a sample is loaded)
    "missing-image": "an image file that does not exist",
    "empty-image": "an image file of 0 bytes, or an image of zero width or height",
    "corrupt-image": "an image file that cannot be decoded (corrupt, truncated, not an image)",
    "image-too-large": "an image above Pillow's decompression-bomb limit",
    "unusable-image": "the image strategy cannot preprocess the image",
    # tokenization, labels and length (found when a sample is loaded)
    "template-mismatch": "the chat template is not prefix-stable for this sample, so replies cannot be located",
    "image-token-mismatch": "the rendered conversation lost or gained image placeholders",
    "too-long": "longer than data.max_length and the truncation policy cannot shorten it",
    "no-supervised-tokens": "no token left to learn from (e.g. truncation removed every reply)",
}
