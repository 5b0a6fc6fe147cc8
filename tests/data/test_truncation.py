"""Tests for image-aware truncation (mmfw.data.truncation), including property tests against plain references.

The property tests use a fixed number of derandomized examples, so CI sees the same cases on every run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mistral_common
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfw.data.errors import RecordError
from mmfw.data.tokenize import IGNORE_INDEX, EncodedSample, encode_conversation
from mmfw.data.tokenizer_train import train_tokenizer
from mmfw.data.truncation import TRUNCATION_POLICIES, truncate

IMG = 99
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)


# --- synthetic encoded samples ---------------------------------------------------------------------------------------
@st.composite
def encoded_samples(draw) -> tuple[EncodedSample, list[int]]:
    """A random sample built turn by turn, and ``owner[p]``: the image that position p belongs to, or -1."""
    ids: list[int] = []
    labels: list[int] = []
    owner: list[int] = []
    spans: list[tuple[int, int]] = []
    ends: list[int] = []

    def text(n: int, supervised: bool) -> None:
        for _ in range(n):
            t = draw(st.integers(1, 50))
            ids.append(t)
            labels.append(t if supervised else IGNORE_INDEX)
            owner.append(-1)

    text(draw(st.integers(0, 3)), False)  # system prompt
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(0, 2))):  # user turn: text and images, possibly adjacent
            text(draw(st.integers(0, 2)), False)
            n = draw(st.integers(1, 5))
            spans.append((len(ids), len(ids) + n))
            ids.extend([IMG] * n)
            labels.extend([IGNORE_INDEX] * n)
            owner.extend([len(spans) - 1] * n)
        text(draw(st.integers(1, 3)), False)
        text(draw(st.sampled_from([0, 1, 2, 3, 4])), True)  # the reply (0: a turn with nothing supervised)
        text(draw(st.integers(0, 1)), False)  # template glue after the reply
        ends.append(len(ids))
    return EncodedSample(ids, labels, image_spans=spans, turn_ends=ends), owner


def reference(enc: EncodedSample, owner: list[int], max_length: int, policy: str) -> tuple[int, int] | str:
    """``(kept length, kept images)`` or the skip reason, computed position by position."""
    n = len(enc)
    if n <= max_length:
        keep = n
    elif policy == "drop-sample":
        return "too-long"
    elif policy == "drop-turns":
        fitting = [e for e in enc.turn_ends if e <= max_length]
        if not fitting:
            return "too-long"
        keep = max(fitting)
    else:
        keep = max_length
        while 0 < keep < n and owner[keep - 1] != -1 and owner[keep - 1] == owner[keep]:
            keep -= 1  # inside an image: step back to its first token
    if all(lab == IGNORE_INDEX for lab in enc.labels[:keep]):
        return "no-supervised-tokens"
    return keep, len({o for o in owner[:keep] if o != -1})


@pytest.mark.parametrize("policy", TRUNCATION_POLICIES)
@PROPERTY
@given(sample=encoded_samples(), data=st.data())
def test_truncate_matches_reference(policy: str, sample, data) -> None:
    enc, owner = sample
    n = len(enc)
    max_length = data.draw(st.one_of(st.integers(1, n + 3), st.integers(max(1, n - 8), n + 3)), label="max_length")
    expected = reference(enc, owner, max_length, policy)
    if isinstance(expected, str):
        with pytest.raises(RecordError) as info:
            truncate(enc, max_length, policy)
        assert info.value.reason_code == expected
        return
    out = truncate(enc, max_length, policy)
    keep, images = expected
    assert (len(out.sample), out.num_images, out.truncated) == (keep, images, keep < len(enc))
    assert len(out.sample) <= max_length
    assert out.sample.input_ids == enc.input_ids[:keep] and out.sample.labels == enc.labels[:keep]
    # never a partial image: every kept image keeps all its tokens
    assert out.sample.image_spans == enc.image_spans[:images]
    assert all(end <= keep for _, end in out.sample.image_spans)
    assert sum(1 for t in out.sample.input_ids if t == IMG) == sum(e - s for s, e in out.sample.image_spans)


def test_truncate_rejects_bad_arguments() -> None:
    enc = EncodedSample([1, 2], [IGNORE_INDEX, 2], turn_ends=[2])
    with pytest.raises(ValueError, match="unknown truncation policy"):
        truncate(enc, 4, "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        truncate(enc, 0, "cut-text")


def test_untruncated_sample_without_supervision_is_skipped() -> None:
    with pytest.raises(RecordError, match="no supervised token") as info:
        truncate(EncodedSample([1, 2], [IGNORE_INDEX] * 2, turn_ends=[2]), 8, "drop-turns", "s1")
    assert info.value.reason_code == "no-supervised-tokens" and "'s1'" in str(info.value)


# --- real chat templates ---------------------------------------------------------------------------------------------
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] {{ message['content'] }} "
    "[/INST]{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
WORDS = ["red", "blue", "square", "circle", "left", "two", "what", "is", "the", "shape", "?"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    from transformers import LlamaTokenizer

    folder = tmp_path_factory.mktemp("mistral")
    shutil.copy(Path(os.path.dirname(mistral_common.__file__)) / "data" / "tokenizer.model.v1",
                folder / "tokenizer.model")
    mistral = LlamaTokenizer.from_pretrained(str(folder))
    mistral.add_special_tokens({"additional_special_tokens": ["<image>"]})
    mistral.chat_template = MISTRAL_TEMPLATE
    chatml = train_tokenizer([" ".join(WORDS)] * 8, tmp_path_factory.mktemp("chatml"), vocab_size=300)
    return {"mistral": mistral, "chatml": chatml}


@st.composite
def conversations(draw) -> tuple[list[dict[str, str]], list[int]]:
    words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
    messages, counts = [], []
    for _ in range(draw(st.integers(1, 3))):
        parts = []
        for _ in range(draw(st.integers(0, 2))):
            parts.append("<image>")
            counts.append(draw(st.integers(1, 6)))
        parts.append(draw(words))
        messages.append({"role": "user", "content": " ".join(parts)})
        messages.append({"role": "assistant", "content": draw(words)})
    return messages, counts


@pytest.mark.parametrize("name", ["mistral", "chatml"])
def test_drop_turns_equals_encoding_the_shorter_conversation(tokenizers: dict, name: str) -> None:
    tok = tokenizers[name]

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(conv=conversations(), slack=st.integers(-30, 0))
    def check(conv, slack: int) -> None:
        messages, counts = conv
        enc = encode_conversation(messages, tok, image_token="<image>", image_token_counts=counts)
        # turn_ends are the lengths of the conversation encoded up to each reply
        for k, end in enumerate(enc.turn_ends):
            prefix = messages[:2 * k + 2]
            n_images = sum(m["content"].count("<image>") for m in prefix)
            sub = encode_conversation(prefix, tok, image_token="<image>", image_token_counts=counts[:n_images])
            assert len(sub) == end and sub.input_ids == enc.input_ids[:end] and sub.labels == enc.labels[:end]
        max_length = max(1, len(enc) + slack)
        try:
            out = truncate(enc, max_length, "drop-turns")
        except RecordError as e:
            assert e.reason_code == "too-long" and enc.turn_ends[0] > max_length
            return
        k = max(i for i, e in enumerate(enc.turn_ends) if e <= max_length)
        prefix = messages[:2 * k + 2]
        ref = encode_conversation(prefix, tok, image_token="<image>",
                                  image_token_counts=counts[:out.num_images])
        assert out.sample.input_ids == ref.input_ids and out.sample.labels == ref.labels
        assert out.num_images == sum(m["content"].count("<image>") for m in prefix)
        # exactly the kept replies (with their end-of-turn token) are supervised
        sup = [t for t, lab in zip(ref.input_ids, ref.labels, strict=True) if lab != IGNORE_INDEX]
        replies = [m["content"] for m in prefix if m["role"] == "assistant"]
        eos = tok.eos_token if name == "mistral" else "<|im_end|>"
        assert tok.decode(sup, skip_special_tokens=False).replace(" ", "") == "".join(
            r + eos for r in replies).replace(" ", "")

    check()
