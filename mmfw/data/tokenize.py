"""Chat messages -> ``input_ids`` and ``labels`` with the tokenizer's own chat template.

:func:`encode_conversation` renders the conversation with ``tokenizer.apply_chat_template(..., tokenize=False)`` and
tokenizes the text with ``add_special_tokens=False`` (templates write the BOS token into the text themselves; letting
the tokenizer add another would double it).

**Which tokens are supervised.** Labels are ``-100`` everywhere except the tokens of each assistant reply, including
the template's end-of-turn token(s) (``<|im_end|>`` for ChatML, ``</s>`` for Mistral / Llama-2) so that the model
learns to stop. The spans are found without knowing the template, by incremental rendering: for the k-th message
that is an assistant reply, ``P = render(messages[:k], add_generation_prompt=True)`` is everything the model sees
before it writes the reply and ``Q = render(messages[:k + 1])`` is the same conversation with the reply written out;
the supervised tokens are ``tokens(Q)[len(tokens(P)):]``. Tokens at the end of that span whose text is only
whitespace are *not* supervised: ChatML renders ``"<|im_end|>\\n"`` and the newline after the end-of-turn token is
template glue that a generating model never produces (it stops at ``<|im_end|>``). Whitespace inside the reply, or
at its end but before the end-of-turn token, stays supervised.

This is only sound when the template is *prefix-stable*: ``tokens(P)`` must be a prefix of ``tokens(Q)`` and
``tokens(Q)`` a prefix of the tokens of the whole conversation. Both are checked; a violation raises
:class:`TemplateMismatchError` naming the sample, the assistant turn and the first differing token position, rather
than masking the whole sample (LLaVA's "tokenization mismatch" warning, whose samples silently train with loss 0).

**Images.** Each occurrence of the (single-token) image placeholder is then expanded to ``image_token_counts[i]``
copies for the i-th image, all labelled ``-100``; the number of placeholders in the rendered ids must equal
``len(image_token_counts)``. With ``image_markers=(start, end)`` (OmniLMM's ``<im_start>`` / ``<im_end>``), each
image becomes ``start + N x placeholder + end``; the markers are unsupervised too and belong to the image's span, so
truncation never separates them from the image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmfw.data.control_tokens import neutralize_messages
from mmfw.data.label_view import render_supervision
from mmfw.errors import IGNORE_INDEX, ImageTokenCountError, TemplateMismatchError

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_INDEX",
    "EncodedSample",
    "ImageTokenCountError",
    "TemplateMismatchError",
    "encode_conversation",
    "encode_prompt",
    "image_token_id",
    "render_supervision",
    "with_system_prompt",
]

_warned_no_eos: set[str] = set()


@dataclass
class EncodedSample:
    """Token ids and labels of one sample (image placeholders already expanded). Both lists have equal length.

    ``image_spans`` are the ``[start, end)`` positions of each image's tokens, in image order; ``turn_ends`` the
    position just past each assistant turn (the length of the conversation rendered up to and including that turn),
    so cutting there keeps whole turns. Both are filled by :func:`encode_conversation` and used by
    :mod:`mmfw.data.truncation`.
    """

    input_ids: list[int]
    labels: list[int]
    image_spans: list[tuple[int, int]] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and labels ({len(self.labels)}) differ in length")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def image_token_id(tokenizer: Any, image_token: str) -> int:
    """The id of ``image_token``, checking that it is one token of ``tokenizer`` (added as a special token)."""
    tid = tokenizer.convert_tokens_to_ids(image_token)
    vocab_ok = isinstance(tid, int) and (tid != tokenizer.unk_token_id or image_token == tokenizer.unk_token)
    if vocab_ok:
        ids = tokenizer(f"a{image_token}b", add_special_tokens=False)["input_ids"]
        vocab_ok = ids.count(tid) == 1
    if not vocab_ok:
        raise ValueError(f"image token {image_token!r} is not a single token of the tokenizer; add it first, e.g. "
                         f"tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}}) "
                         f"(and resize the model's embeddings)")
    return tid


def with_system_prompt(messages: Sequence[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """``messages`` with a leading system message holding ``system_prompt``, unless it is None or one exists."""
    out = [dict(m) for m in messages]
    if system_prompt is not None and not (out and out[0]["role"] == "system"):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _mismatch(tokenizer: Any, sample_id: str, turn: int, what: str, short: list[int], long: list[int]) -> str:
    pos = _first_difference(short, long)
    lo = max(0, pos - 8)

    def ctx(ids: list[int]) -> str:
        return repr(tokenizer.decode(ids[lo:pos + 8], skip_special_tokens=False))

    return (f"sample {sample_id!r}: chat template is not prefix-stable at assistant message {turn}: {what} "
            f"(first difference at token {pos}; shorter render near there: {ctx(short)} "
            f"[{len(short)} tokens], longer render: {ctx(long)} [{len(long)} tokens]). Use a template whose "
            f"rendering of a conversation prefix is a token prefix of the full rendering.")


def _check_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat_template; set "
                         f"tokenizer.chat_template first")


def _is_whitespace_token(tokenizer: Any, tid: int) -> bool:
    return tokenizer.decode([tid], skip_special_tokens=False).strip() == "" and tid not in tokenizer.all_special_ids


def _marker_ids(tokenizer: Any, image_markers: tuple[str, str] | None) -> tuple[int, int] | None:
    if image_markers is None:
        return None
    start, end = image_markers
    return image_token_id(tokenizer, start), image_token_id(tokenizer, end)


def _expand_images(ids: list[int], labels: list[int], tid: int, counts: Sequence[int], sample_id: str,
                   markers: tuple[int, int] | None = None,
                   ) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """Expand the k-th placeholder to ``counts[k]`` tokens (between ``markers`` when given). Also returns each
    image's ``[start, end)`` span (markers included) and ``shift``, where raw position ``p`` lands at
    ``p + shift[p]`` (``len(ids) + 1`` entries)."""
    found = ids.count(tid)
    if found != len(counts):
        raise ImageTokenCountError(f"sample {sample_id!r}: the rendered conversation has {found} image token(s) but "
                                   f"{len(counts)} image(s) were given")
    if markers is not None and any(t in markers for t in ids):
        raise ImageTokenCountError(f"sample {sample_id!r}: the text already contains an image start/end token; "
                                   "they are written around each image by mmfw and must not appear in the data")
    before, after = ([markers[0]], [markers[1]]) if markers is not None else ([], [])
    out_ids: list[int] = []
    out_labels: list[int] = []
    spans: list[tuple[int, int]] = []
    shift: list[int] = []
    k = 0
    for t, lab in zip(ids, labels, strict=True):
        shift.append(len(out_ids) - len(shift))
        if t == tid:
            n = int(counts[k])
            if n < 1:
                raise ValueError(f"sample {sample_id!r}: image {k} has {n} tokens; every image needs at least one")
            span = before + [tid] * n + after
            spans.append((len(out_ids), len(out_ids) + len(span)))
            out_ids.extend(span)
            out_labels.extend([IGNORE_INDEX] * len(span))
            k += 1
        else:
            out_ids.append(t)
            out_labels.append(lab)
    shift.append(len(out_ids) - len(ids))
    return out_ids, out_labels, spans, shift


def _supervise_replies(tokenizer: Any, msgs: list[dict[str, str]], full: list[int], sample_id: str,
                       ) -> tuple[list[int], list[int]]:
    """Labels of the rendered conversation ``full`` (its ids on each assistant reply, ``IGNORE_INDEX`` elsewhere)
    and the position just past each assistant turn, found by incremental rendering (module docstring); checks that
    the template is prefix-stable and warns once per tokenizer and template when no reply supervises the eos token."""
    labels = [IGNORE_INDEX] * len(full)
    eos = tokenizer.eos_token_id
    eos_supervised = False
    turn_ends: list[int] = []
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, msgs[:k], add_generation_prompt=True)
        after = _render(tokenizer, msgs[:k + 1], add_generation_prompt=False)
        if after[:len(before)] != before:
            raise TemplateMismatchError(_mismatch(tokenizer, sample_id, k, "the prompt (with generation prompt) is "
                                                  "not a prefix of the prompt + reply", before, after))
        if full[:len(after)] != after:
            raise TemplateMismatchError(_mismatch(tokenizer, sample_id, k, "the conversation up to this reply is "
                                                  "not a prefix of the whole conversation", after, full))
        start, end = len(before), len(after)
        turn_ends.append(end)
        while end > start and _is_whitespace_token(tokenizer, after[end - 1]):
            end -= 1
        if end == start:
            logger.warning("sample %r: assistant message %d renders to no supervised token", sample_id, k)
        labels[start:end] = full[start:end]
        eos_supervised = eos_supervised or (eos is not None and eos in full[start:end])
    if not eos_supervised and eos is not None:
        key = f"{getattr(tokenizer, 'name_or_path', '')}|{tokenizer.chat_template}"
        if key not in _warned_no_eos:
            _warned_no_eos.add(key)
            logger.warning("sample %r: the eos token %r is not part of any supervised reply; with this chat "
                           "template a trained model may not learn to stop", sample_id, tokenizer.eos_token)
    return labels, turn_ends


def encode_conversation(
    messages: Sequence[dict[str, str]],
    tokenizer: Any,
    *,
    image_token: str,
    image_token_counts: Sequence[int],
    system_prompt: str | None = None,
    sample_id: str = "<sample>",
    image_markers: tuple[str, str] | None = None,
) -> EncodedSample:
    """Render and tokenize a conversation; supervise only the assistant replies (+ end-of-turn token).

    Args:
        messages: ``{"role", "content"}`` dicts; roles system/user/assistant. Passed to the template as they are.
        tokenizer: A transformers tokenizer with a ``chat_template``.
        image_token: The placeholder; must be a single token of ``tokenizer``.
        image_token_counts: Tokens each image becomes (``ImageStrategy.num_tokens``), in placeholder order.
        system_prompt: Prepended as a system message unless the conversation already starts with one.
        sample_id: Named in error messages.
        image_markers: ``(start, end)`` single tokens written around each image's placeholder run.

    Control tokens inside message contents are text (:mod:`mmfw.data.control_tokens`), never turn boundaries.

    Raises:
        TemplateMismatchError: the template is not prefix-stable for this conversation.
        ImageTokenCountError: the number of placeholders in the rendered text differs from the number of images.
        ValueError: the image token is not a single token, or an image has no tokens.
    """
    _check_template(tokenizer)
    tid = image_token_id(tokenizer, image_token)
    markers = _marker_ids(tokenizer, image_markers)
    msgs = with_system_prompt(neutralize_messages(messages, tokenizer, keep=(image_token,)), system_prompt)
    full = _render(tokenizer, msgs, add_generation_prompt=False)
    labels, turn_ends = _supervise_replies(tokenizer, msgs, full, sample_id)
    ids, labels, spans, shift = _expand_images(full, labels, tid, image_token_counts, sample_id, markers)
    return EncodedSample(input_ids=ids, labels=labels, image_spans=spans, turn_ends=[e + shift[e] for e in turn_ends])


def encode_prompt(
    messages: Sequence[dict[str, str]],
    tokenizer: Any,
    *,
    image_token: str,
    image_token_counts: Sequence[int],
    system_prompt: str | None = None,
    sample_id: str = "<sample>",
    image_markers: tuple[str, str] | None = None,
) -> list[int]:
    """Ids of a generation prompt: ``messages`` (no trailing reply) rendered with ``add_generation_prompt=True``,
    image placeholders expanded as in :func:`encode_conversation`."""
    _check_template(tokenizer)
    tid = image_token_id(tokenizer, image_token)
    messages = neutralize_messages(messages, tokenizer, keep=(image_token,))
    ids = _render(tokenizer, with_system_prompt(messages, system_prompt), add_generation_prompt=True)
    ids, _, _, _ = _expand_images(ids, [IGNORE_INDEX] * len(ids), tid, image_token_counts, sample_id,
                                  _marker_ids(tokenizer, image_markers))
    return ids
