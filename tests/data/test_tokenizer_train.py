"""Tests for offline tokenizer training (mmfw.data.tokenizer_train)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmfw.data.synth import generate_synthetic_vqa
from mmfw.data.tokenizer_train import CHATML_TEMPLATE, texts_from_llava_json, train_tokenizer

WORDS = (
    "the a of and to in is was for on that with as by at from it an be this are or which has his her they "
    "image picture shape color answer question small large left right top bottom circle square triangle"
).split()

CONVERSATIONS: list[list[dict[str, str]]] = [
    [
        {"role": "user", "content": "<image>\nWhat color is the shape?"},
        {"role": "assistant", "content": "red"},
    ],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "<image>\nHow many shapes are there?"},
        {"role": "assistant", "content": "3"},
        {"role": "user", "content": "And where is the circle?"},
        {"role": "assistant", "content": "top left"},
    ],
    [  # whitespace-heavy contents at the boundaries of the template
        {"role": "user", "content": "  leading spaces\n\n"},
        {"role": "assistant", "content": "\n\n  starts with newlines\t"},
        {"role": "user", "content": "\n"},
        {"role": "assistant", "content": " x <image>y\n"},
        {"role": "user", "content": "ünïcödé 🙂"},
        {"role": "assistant", "content": "   "},
    ],
]


def _ids(enc) -> list[int]:
    return list(enc["input_ids"]) if not isinstance(enc, list) else enc


def _corpus(llava_json: Path) -> list[str]:
    rng = random.Random(0)
    texts = list(texts_from_llava_json([llava_json]))
    texts += [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(400)]
    return texts


@pytest.fixture(scope="module")
def llava_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_vqa(tmp_path_factory.mktemp("synth"), num_train=120, num_eval=8, seed=0).train


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, llava_json: Path) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(_corpus(llava_json), out, vocab_size=512)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(tok_dir)


def test_texts_from_llava_json(tmp_path: Path, llava_json: Path) -> None:
    records = json.loads(llava_json.read_text())
    texts = list(texts_from_llava_json([llava_json]))
    assert len(texts) == 2 * len(records)
    assert all("<image>" not in t and t == t.strip() and t for t in texts)
    assert texts[0] == records[0]["conversations"][0]["value"].replace("<image>", "").strip()
    assert texts[1] == records[0]["conversations"][1]["value"]

    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        json.dumps({"conversations": [{"from": "human", "value": "<image>\nHi <image> there"}]})
        + "\n\n"
        + json.dumps({"conversations": [{"from": "gpt", "value": "<image>"}, {"from": "gpt", "value": "ok"}]})
        + "\n"
    )
    assert list(texts_from_llava_json([jsonl])) == ["Hi  there", "ok"]
    assert list(texts_from_llava_json([jsonl, llava_json]))[2:] == texts


def test_texts_from_llava_json_leaves_bad_lines_out(tmp_path: Path, caplog) -> None:
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b"\n".join([
        b"{broken", b'{"id": "caf\xe9"}', b"[1, 2]", b'{"conversations": "hi"}',
        json.dumps({"conversations": ["x", {"role": "user", "content": "role form"}, {"from": "gpt", "value": None}]})
        .encode()]) + b"\n")
    assert list(texts_from_llava_json([jsonl])) == ["role form"]
    assert "4 record(s) without usable conversations" in caplog.text


def test_special_tokens_and_config(tok: PreTrainedTokenizerFast) -> None:
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 0
    assert tok.eos_token == "<|im_end|>"
    assert tok.bos_token == "<|bos|>"
    specials = ["<|pad|>", "<|endoftext|>", "<|bos|>", "<|im_start|>", "<|im_end|>", "<image>"]
    ids = tok.convert_tokens_to_ids(specials)
    assert ids == list(range(6)), "special tokens have fixed low ids"
    assert "<image>" in tok.extra_special_tokens and "<|im_start|>" in tok.extra_special_tokens
    assert set(ids) <= set(tok.all_special_ids)
    assert tok.chat_template == CHATML_TEMPLATE
    assert 256 + 6 < len(tok) <= 512
    # Nothing is added automatically (no BOS/EOS), and padding is on the right with the pad id.
    plain = _ids(tok("hello world"))
    assert not set(plain) & set(ids)
    batch = tok(["a", "a b c d"], padding=True)["input_ids"]
    assert len(batch[0]) == len(batch[1]) and batch[0][-1] == tok.pad_token_id and batch[0][0] != tok.pad_token_id


@pytest.mark.parametrize(
    "text",
    [
        "What color is the shape?",
        "",
        " ",
        "\n",
        "  two leading spaces and trailing  ",
        "line one\nline two\n\n\nthree\r\nfour",
        "tabs\tand\tmore\t",
        "Ünïcödé façade — naïve 日本語 🙂👍",
        "numbers 0123456789 and punctuation !@#$%^&*()[]{};:'\",.<>/?\\|`~",
        "a <image> b",
    ],
)
def test_round_trip(tok: PreTrainedTokenizerFast, text: str) -> None:
    ids = _ids(tok(text))
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_string(tok.convert_ids_to_tokens(ids)) == text


def test_image_token_is_atomic(tok: PreTrainedTokenizerFast) -> None:
    image_id = tok.convert_tokens_to_ids("<image>")
    assert _ids(tok("<image>")) == [image_id]
    for text in ["<image>\nWhat shape is in the image?", "a<image>b", "<image><image> x <image>", "x\n<image>\n"]:
        ids = _ids(tok(text))
        assert ids.count(image_id) == text.count("<image>")
        assert tok.decode(ids) == text
    # Special-token text is also atomic for the ChatML markers, and the "<image>"-free text is unchanged around it.
    ids = _ids(tok("red<|im_end|>\n<|im_start|>user"))
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 1
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 1
    assert tok.decode(_ids(tok("x <image> y")), skip_special_tokens=True) == "x  y"


def test_extra_special_tokens_argument(tmp_path: Path) -> None:
    tok = train_tokenizer(["hello video and image", "more text here"] * 5, tmp_path, 300, ("<image>", "<video>"))
    image_id, video_id = tok.convert_tokens_to_ids(["<image>", "<video>"])
    assert image_id != video_id and tok.unk_token_id is None
    assert _ids(tok("<video> then <image>")) == [video_id, *_ids(tok(" then ")), image_id]
    # Duplicates of built-in tokens are ignored; too small vocabularies and bad arguments are rejected.
    tok2 = train_tokenizer(["abc abc"], tmp_path / "dup", 300, ("<|im_end|>", "<image>"))
    base = ["<|pad|>", "<|endoftext|>", "<|bos|>", "<|im_start|>", "<|im_end|>", "<image>"]
    assert tok2.convert_ids_to_tokens(list(range(7)))[:6] == base
    assert tok2.convert_ids_to_tokens(6) not in tok2.all_special_tokens
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], tmp_path / "small", 260)
    with pytest.raises(TypeError):
        train_tokenizer(["abc"], tmp_path / "bad", 300, "<image>")


def test_vocab_size_is_reached(tmp_path: Path) -> None:
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(300)]
    tok = train_tokenizer(texts, tmp_path, vocab_size=320)
    assert len(tok) == 320


def test_chat_template_renders_chatml(tok: PreTrainedTokenizerFast) -> None:
    conv = CONVERSATIONS[1]
    rendered = tok.apply_chat_template(conv, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nHow many shapes are there?<|im_end|>\n"
        "<|im_start|>assistant\n3<|im_end|>\n"
        "<|im_start|>user\nAnd where is the circle?<|im_end|>\n"
        "<|im_start|>assistant\ntop left<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(conv[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\n<image>\nHow many shapes are there?<|im_end|>\n<|im_start|>assistant\n")
    # tokenize=True gives exactly the ids of the rendered text without extra special tokens.
    assert _ids(tok.apply_chat_template(conv)) == _ids(tok(rendered, add_special_tokens=False))


@pytest.mark.parametrize("conv_index", range(len(CONVERSATIONS)))
def test_prefix_stability(tok: PreTrainedTokenizerFast, conv_index: int) -> None:
    conv = CONVERSATIONS[conv_index]
    full = _ids(tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    newline = _ids(tok("\n"))
    assert len(newline) == 1
    checked = 0
    for k, message in enumerate(conv):
        if message["role"] != "assistant":
            continue
        prompt = _ids(tok(tok.apply_chat_template(conv[:k], tokenize=False, add_generation_prompt=True)))
        upto = _ids(tok(tok.apply_chat_template(conv[: k + 1], tokenize=False)))
        assert full[: len(prompt)] == prompt, f"turn {k}: generation prompt is a token prefix"
        assert full[: len(upto)] == upto, f"turn {k}: conversation prefix is a token prefix"
        # The assistant span is exactly the tokens of its content followed by <|im_end|> and the newline.
        assert upto[len(prompt) :] == [*_ids(tok(message["content"])), im_end, newline[0]]
        checked += 1
    assert checked >= 1
    # Every <|im_end|> is followed by the same single newline token.
    positions = [i for i, t in enumerate(full) if t == im_end]
    assert len(positions) == len(conv)
    assert all(full[i + 1] == newline[0] for i in positions)


def test_reload_gives_identical_ids(tok_dir: Path, llava_json: Path) -> None:
    texts = _corpus(llava_json)[:50]
    trained = train_tokenizer(texts, tok_dir.parent / "fresh", vocab_size=512)
    reloaded = AutoTokenizer.from_pretrained(tok_dir.parent / "fresh")
    assert isinstance(reloaded, PreTrainedTokenizerFast)
    assert reloaded.get_vocab() == trained.get_vocab()
    assert reloaded.chat_template == trained.chat_template == CHATML_TEMPLATE
    assert reloaded.all_special_tokens == trained.all_special_tokens
    probes = [*texts, "<image>\nfoo bar", "  x\n\ny  "]
    for text in probes:
        assert _ids(reloaded(text)) == _ids(trained(text))
    for conv in CONVERSATIONS:
        assert _ids(reloaded.apply_chat_template(conv)) == _ids(trained.apply_chat_template(conv))
        assert _ids(reloaded.apply_chat_template(conv[:1], add_generation_prompt=True)) == _ids(
            trained.apply_chat_template(conv[:1], add_generation_prompt=True)
        )


def test_training_is_deterministic(tmp_path: Path, llava_json: Path) -> None:
    texts = _corpus(llava_json)
    train_tokenizer(iter(texts), tmp_path / "a", vocab_size=400)
    train_tokenizer(texts, tmp_path / "b", vocab_size=400)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
