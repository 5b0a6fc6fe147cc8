"""Multi-turn chat: each image is encoded once, later turns read the KV cache, and every reply is token-identical
to a fresh greedy generate over the whole conversation (images re-encoded, no cache)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmfw.cli.main import main
from mmfw.data.tokenize import encode_prompt
from mmfw.inference import VLMPipeline, load_pipeline
from tests.export.test_hf_llava_export import make_run
from tests.export.test_hf_native_export import QUICKSTART

QUESTIONS = ("What color is the shape?", "What shape is it?", "How many shapes are there?")


@pytest.fixture
def run(tmp_path, registries, tokenizer_dir) -> Path:
    return make_run(tmp_path, registries, tokenizer_dir, {"type": "resize"}, **QUICKSTART)


@pytest.fixture
def images(synth_data) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(Path(synth_data.images).glob("*.png"))[:2]]


@torch.no_grad()
def fresh_reply(pipe: VLMPipeline, messages: list[dict[str, str]], images: list[Image.Image],
                max_new_tokens: int) -> list[int]:
    """Greedy reply ids of a plain generate over the whole conversation (every image encoded again)."""
    inputs = [pipe.model.image_strategy.preprocess(im) for im in images]
    counts = [pipe.model.image_strategy.num_tokens(x.size) for x in inputs]
    ids = encode_prompt(messages, pipe.tokenizer, image_token="<image>", image_token_counts=counts,
                        system_prompt=pipe.cfg.data.system_prompt)
    batch = pipe.collator([{"input_ids": ids, "labels": [-100] * len(ids), "images": inputs}])
    return pipe.model.generate(**batch.model_inputs(), max_new_tokens=max_new_tokens, do_sample=False)[0].tolist()


def encoder_calls(pipe: VLMPipeline) -> list[int]:
    calls = [0]
    pipe.model.vision_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_later_turns_reuse_image_features_and_cache(run, registries, images) -> None:
    pipe = load_pipeline(run, registries)
    calls = encoder_calls(pipe)
    chat = pipe.chat(images[0], max_new_tokens=6)
    read, prompt_lengths = [0], []
    for question in QUESTIONS:
        chat.ask(question)
        assert calls[0] == chat.vision_encoder_calls == 1  # encoded for the first turn, never again
        prompt_lengths.append(len(chat.prompt_ids(chat.messages[:-1])))
        read.append(chat.llm_tokens - sum(read))
        before = calls[0]
        assert fresh_reply(pipe, chat.messages[:-1], images[:1], 6) == chat.last_reply_ids
        calls[0] = before
    # the first turn reads its whole prompt; a later one only what the earlier turns did not hold
    assert read[1] == prompt_lengths[0]
    for turn in (1, 2):
        assert read[turn + 1] <= prompt_lengths[turn] - prompt_lengths[turn - 1]
    assert [m["role"] for m in chat.messages] == ["user", "assistant"] * 3
    assert chat.messages[0]["content"] == f"<image>\n{QUESTIONS[0]}"


def test_an_image_added_later_is_encoded_once(run, registries, images) -> None:
    pipe = load_pipeline(run, registries)
    chat = pipe.chat(images[0], max_new_tokens=5)
    chat.ask(QUESTIONS[0])
    chat.add_image(images[1])
    chat.ask("And this one?")
    chat.ask(QUESTIONS[1])
    assert chat.vision_encoder_calls == 2
    assert fresh_reply(pipe, chat.messages[:-1], images, 5) == chat.last_reply_ids


def test_without_cache_reuse_the_replies_are_the_same(run, registries, images) -> None:
    pipe = load_pipeline(run, registries)
    cached, plain = pipe.chat(images[0], max_new_tokens=6), pipe.chat(images[0], max_new_tokens=6, reuse_cache=False)
    for question in QUESTIONS:
        assert cached.ask(question) == plain.ask(question)
        assert cached.last_reply_ids == plain.last_reply_ids
    assert cached.llm_tokens < plain.llm_tokens


def test_cli_json_turns(run, synth_data, monkeypatch, capsys) -> None:
    image = sorted(Path(synth_data.images).glob("*.png"))[0]
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("\n".join(QUESTIONS) + "\n"))
    assert main(["-q", "chat", str(run), "--image", str(image), "--json", "--max-new-tokens", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["prompt"] for x in lines] == list(QUESTIONS) and [x["turn"] for x in lines] == [1, 2, 3]
    assert [x["vision_encoder_calls"] for x in lines] == [1, 1, 1]
    pipe = load_pipeline(run)
    chat = pipe.chat(image, max_new_tokens=4)
    assert [x["reply"] for x in lines] == [chat.ask(q) for q in QUESTIONS]


def test_cli_one_shot_prompt(run, synth_data, capsys) -> None:
    image = sorted(Path(synth_data.images).glob("*.png"))[0]
    assert main(["-q", "chat", str(run), "--image", str(image), "--prompt", QUESTIONS[0],
                 "--max-new-tokens", "4"]) == 0
    expected = load_pipeline(run).generate(image, QUESTIONS[0], max_new_tokens=4)
    assert capsys.readouterr().out.splitlines() == [expected]


def test_text_only_and_anyres_conversations(tmp_path, run, registries, tokenizer_dir, images) -> None:
    pipe = load_pipeline(run, registries)
    chat = pipe.chat(max_new_tokens=4)
    for question in QUESTIONS[:2]:
        chat.ask(question)
        assert fresh_reply(pipe, chat.messages[:-1], [], 4) == chat.last_reply_ids
    assert chat.vision_encoder_calls == 0

    anyres = make_run(tmp_path / "anyres", registries, tokenizer_dir,
                      {"type": "anyres", "grid_pinpoints": [[56, 112], [112, 56], [112, 112]]})
    pipe = load_pipeline(anyres, registries)
    chat = pipe.chat(images[0], max_new_tokens=4)
    for question in QUESTIONS[:2]:
        chat.ask(question)
        assert fresh_reply(pipe, chat.messages[:-1], images[:1], 4) == chat.last_reply_ids
    assert chat.vision_encoder_calls == 1
