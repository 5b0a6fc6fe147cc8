"""Tests for chat-template tokenization and label masking (mmfw.data.tokenize).

Two real templates are exercised: Mistral's ``[INST] ... [/INST]reply</s>`` with the real Mistral SentencePiece
vocabulary (shipped with ``mistral_common``), and ChatML with a small byte-level BPE tokenizer trained offline.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import mistral_common
import pytest

from mmfw.data.tokenize import (
    IGNORE_INDEX,
    TemplateMismatchError,
    encode_conversation,
    encode_prompt,
    render_supervision,
)
from mmfw.data.tokenizer_train import CHATML_TEMPLATE, train_tokenizer

MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] {{ message['content'] }} "
    "[/INST]{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)

CORPUS = [
    "What color is the shape? red green blue", "How many shapes are there? 3", "Where is the circle? top left",
    "Describe the image. A red square on a grey background.", "You are a helpful assistant.",
]

MULTI = [
    {"role": "user", "content": "<image>\nWhat color is the shape?"},
    {"role": "assistant", "content": "The shape is red."},
    {"role": "user", "content": "And this one? <image>"},
    {"role": "assistant", "content": "Blue, with a green border."},
    {"role": "user", "content": "How many in total?"},
    {"role": "assistant", "content": "2"},
]
MULTI_REPLIES = ["The shape is red.", "Blue, with a green border.", "2"]


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    from transformers import LlamaTokenizer

    folder = tmp_path_factory.mktemp("mistral")
    src = Path(os.path.dirname(mistral_common.__file__)) / "data" / "tokenizer.model.v1"
    shutil.copy(src, folder / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.chat_template = MISTRAL_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    return train_tokenizer(CORPUS * 4, tmp_path_factory.mktemp("chatml"), vocab_size=320)


def spans(labels: list[int]) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of supervised positions."""
    out, start = [], None
    for i, lab in enumerate([*labels, IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = i
        elif lab == IGNORE_INDEX and start is not None:
            out.append((start, i))
            start = None
    return out


def supervised_texts(enc, tok) -> list[str]:
    return [tok.decode(enc.input_ids[a:b], skip_special_tokens=False) for a, b in spans(enc.labels)]


def image_runs(ids: list[int], tid: int) -> list[int]:
    runs, n = [], 0
    for t in [*ids, None]:
        if t == tid:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def check_labels_copy_ids(enc) -> None:
    assert len(enc.input_ids) == len(enc.labels)
    for t, lab in zip(enc.input_ids, enc.labels, strict=True):
        assert lab in (IGNORE_INDEX, t)


# --- Mistral (SentencePiece) ---------------------------------------------------------------------------------------


def test_mistral_multi_turn_multi_image(mistral):
    enc = encode_conversation(MULTI, mistral, image_token="<image>", image_token_counts=[5, 3], sample_id="m1")
    check_labels_copy_ids(enc)
    assert supervised_texts(enc, mistral) == [r + "</s>" for r in MULTI_REPLIES]
    tid = mistral.convert_tokens_to_ids("<image>")
    assert image_runs(enc.input_ids, tid) == [5, 3]
    assert all(lab == IGNORE_INDEX for t, lab in zip(enc.input_ids, enc.labels, strict=True) if t == tid)
    # exactly one BOS, first; every supervised span ends with </s>
    assert enc.input_ids[0] == mistral.bos_token_id and enc.input_ids.count(mistral.bos_token_id) == 1
    assert all(enc.labels[b - 1] == mistral.eos_token_id for _, b in spans(enc.labels))
    assert enc.input_ids.count(mistral.eos_token_id) == 3
    # the unsupervised remainder is exactly the prompt text
    rest = mistral.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True)
                           if lab == IGNORE_INDEX and t != tid], skip_special_tokens=False)
    assert rest == "<s>[INST] \nWhat color is the shape? [/INST][INST] And this one?  [/INST][INST] How many in total? " \
                   "[/INST]"


def test_mistral_render_supervision(mistral):
    enc = encode_conversation(MULTI[:4], mistral, image_token="<image>", image_token_counts=[2, 1])
    assert render_supervision(enc.input_ids, enc.labels, mistral, image_token="<image>") == (
        "<s>[INST] <image>×2\nWhat color is the shape? [/INST][[The shape is red.</s>]]"
        "[INST] And this one? <image>×1 [/INST][[Blue, with a green border.</s>]]")


def test_mistral_text_only(mistral):
    msgs = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    enc = encode_conversation(msgs, mistral, image_token="<image>", image_token_counts=[])
    assert supervised_texts(enc, mistral) == ["Hello!</s>"]
    assert enc.num_supervised == len(mistral("Hello!", add_special_tokens=False)["input_ids"]) + 1


# --- ChatML (byte-level BPE) ---------------------------------------------------------------------------------------


def test_chatml_supervises_reply_and_im_end_not_newline(chatml):
    enc = encode_conversation(MULTI, chatml, image_token="<image>", image_token_counts=[4, 1], sample_id="c")
    check_labels_copy_ids(enc)
    assert supervised_texts(enc, chatml) == [r + "<|im_end|>" for r in MULTI_REPLIES]
    im_end = chatml.convert_tokens_to_ids("<|im_end|>")
    assert chatml.eos_token_id == im_end
    for a, b in spans(enc.labels):
        assert enc.input_ids[b - 1] == im_end
        # the newline after <|im_end|> is template glue: present, but not supervised
        assert chatml.decode([enc.input_ids[b]]) == "\n" and enc.labels[b] == IGNORE_INDEX
        # the reply starts right after "<|im_start|>assistant\n"
        assert chatml.decode(enc.input_ids[:a], skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert image_runs(enc.input_ids, chatml.convert_tokens_to_ids("<image>")) == [4, 1]


def test_chatml_render_supervision_and_system_prompt(chatml):
    msgs = MULTI[:2]
    enc = encode_conversation(msgs, chatml, image_token="<image>", image_token_counts=[3], system_prompt="Be brief.")
    assert render_supervision(enc.input_ids, enc.labels, chatml, image_token="<image>") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>×3\nWhat color is the shape?<|im_end|>\n"
        "<|im_start|>assistant\n[[The shape is red.<|im_end|>]]\n")
    # a conversation's own system message wins over the default
    own = [{"role": "system", "content": "Own."}, *msgs]
    enc2 = encode_conversation(own, chatml, image_token="<image>", image_token_counts=[1], system_prompt="Be brief.")
    text = chatml.decode(enc2.input_ids, skip_special_tokens=False)
    assert "Own." in text and "Be brief." not in text
    assert supervised_texts(enc2, chatml) == ["The shape is red.<|im_end|>"]


def test_chatml_whitespace_inside_reply_is_supervised(chatml):
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  two\nlines \n"}]
    enc = encode_conversation(msgs, chatml, image_token="<image>", image_token_counts=[])
    assert supervised_texts(enc, chatml) == ["  two\nlines \n<|im_end|>"]


def test_encode_prompt_is_prefix_of_training_encoding(chatml, mistral):
    for tok in (chatml, mistral):
        enc = encode_conversation(MULTI, tok, image_token="<image>", image_token_counts=[2, 3])
        prompt = encode_prompt(MULTI[:-1], tok, image_token="<image>", image_token_counts=[2, 3])
        last_start = spans(enc.labels)[-1][0]
        assert prompt == enc.input_ids[:last_start]


# --- errors --------------------------------------------------------------------------------------------------------


def test_image_count_mismatch(chatml):
    with pytest.raises(ValueError, match="2 image token.*1 image"):
        encode_conversation(MULTI, chatml, image_token="<image>", image_token_counts=[3], sample_id="s")
    with pytest.raises(ValueError, match="at least one"):
        encode_conversation(MULTI, chatml, image_token="<image>", image_token_counts=[3, 0])


def test_image_token_must_be_single_token(chatml, mistral):
    for tok in (chatml, mistral):
        with pytest.raises(ValueError, match="not a single token"):
            encode_conversation(MULTI, tok, image_token="<picture>", image_token_counts=[1, 1])


def test_missing_chat_template(chatml):
    tok = copy.deepcopy(chatml)
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        encode_conversation(MULTI, tok, image_token="<image>", image_token_counts=[1, 1])


def _with_template(tok, template):
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def test_generation_prompt_not_prefix_raises(chatml):
    # the generation prompt says "assistant:" but the rendered turn says "assistant\n"
    bad = CHATML_TEMPLATE.replace("{% if add_generation_prompt %}<|im_start|>assistant\n",
                                  "{% if add_generation_prompt %}<|im_start|>assistant:\n")
    tok = _with_template(chatml, bad)
    with pytest.raises(TemplateMismatchError, match=r"sample 'bad-1'.*assistant message 1.*first difference at token"):
        encode_conversation(MULTI, tok, image_token="<image>", image_token_counts=[1, 1], sample_id="bad-1")


def test_history_dependent_template_raises(chatml):
    # the header of every turn shows the number of messages, so a prefix renders differently from the whole
    bad = ("{% for message in messages %}<|im_start|>{{ message['role'] }} {{ messages|length }}\n"
           "{{ message['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant {{ messages|length + 1 }}\n{% endif %}")
    tok = _with_template(chatml, bad)
    with pytest.raises(TemplateMismatchError, match=r"sample 'bad-2'.*first difference at token \d+"):
        encode_conversation(MULTI, tok, image_token="<image>", image_token_counts=[1, 1], sample_id="bad-2")


def test_last_turn_special_casing_raises(chatml):
    # a template that renders earlier replies differently from the final one (like templates that drop the
    # reasoning of earlier turns): prompt + reply is stable, but not a prefix of the whole conversation
    bad = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
           "{% if message['role'] == 'assistant' and not loop.last %}[old] {% endif %}"
           "{{ message['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = _with_template(chatml, bad)
    start = len(chatml.apply_chat_template(MULTI[:1], add_generation_prompt=True, tokenize=True)["input_ids"])
    with pytest.raises(TemplateMismatchError, match=rf"sample 'bad-3'.*assistant message 1: the conversation up to "
                                                    rf"this reply is not a prefix of the whole conversation "
                                                    rf"\(first difference at token {start}\b"):
        encode_conversation(MULTI, tok, image_token="<image>", image_token_counts=[1, 1], sample_id="bad-3")


@pytest.mark.parametrize("name", ["mistral", "chatml"])
def test_image_spans_and_turn_ends(name, request):
    tok = request.getfixturevalue(name)
    enc = encode_conversation(MULTI, tok, image_token="<image>", image_token_counts=[5, 3], sample_id="s")
    tid = tok.convert_tokens_to_ids("<image>")
    (a0, b0), (a1, b1) = enc.image_spans
    assert (b0 - a0, b1 - a1) == (5, 3)
    assert [i for i, t in enumerate(enc.input_ids) if t == tid] == [*range(a0, b0), *range(a1, b1)]
    # each turn end closes a supervised span and is where the next user turn starts
    assert len(enc.turn_ends) == 3 and enc.turn_ends[-1] == len(enc)
    for (_, stop), end in zip(spans(enc.labels), enc.turn_ends, strict=True):
        assert stop <= end and all(lab == IGNORE_INDEX for lab in enc.labels[stop:end])
    # cutting at a turn end gives exactly the encoding of the shorter conversation
    short = encode_conversation(MULTI[:2], tok, image_token="<image>", image_token_counts=[5])
    assert short.input_ids == enc.input_ids[:enc.turn_ends[0]] and short.labels == enc.labels[:enc.turn_ends[0]]
