"""Later turn: a second question about an already-seen image, :class:`mmfw.chat.Conversation` (image features and KV
cache kept from the first turn) against asking again from scratch, which encodes the image again and prefills the
whole conversation: mmfw's ``VisionLanguageModel.generate`` and transformers' ``LlavaForConditionalGeneration.generate``
on the same token ids and pixels.

Checked before timing: the three give the same greedy reply tokens. Timed: the second turn with 1 new token (time to
first token) and with ``new_tokens`` (the whole reply), interleaved. Every timed chat call starts from the state
after the first turn (messages and cached token ids restored; the conversation crops its cache back itself).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from benchmarks.common import CheckFailed, interleaved

QUESTIONS = ("What color is the shape?", "What shape is it?")


def _fresh_inputs(pipe: Any, chat: Any, messages: list[dict], image: Image.Image) -> dict[str, torch.Tensor]:
    """The collated inputs of ``messages`` (the whole conversation), the image preprocessed again."""
    x = pipe.model.image_strategy.preprocess(image)
    ids = chat.prompt_ids(messages)
    batch = pipe.collator([{"input_ids": torch.tensor(ids), "labels": torch.full((len(ids),), -100), "images": [x]}])
    return batch.model_inputs()


def measure(vlm: Any, tok: Any, cfg: Any, hf: Any, image: Image.Image, new_tokens: int, repeats: int) -> dict:
    from mmfw.inference import VLMPipeline

    pipe = VLMPipeline(vlm, tok, cfg)
    chat = pipe.chat(image, max_new_tokens=new_tokens)
    chat.ask(QUESTIONS[0], min_new_tokens=new_tokens)
    saved = (list(chat.messages), list(chat._cache_ids), chat.llm_tokens, chat.vision_encoder_calls)
    messages = [*saved[0], {"role": "user", "content": QUESTIONS[1]}]
    inputs = _fresh_inputs(pipe, chat, messages, image)
    hf_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    prompt_len = inputs["input_ids"].shape[1]

    def chat_turn(n: int) -> Any:
        def call() -> list[int]:
            chat.messages, chat._cache_ids = list(saved[0]), list(saved[1])
            chat.ask(QUESTIONS[1], max_new_tokens=n, min_new_tokens=n)
            return chat.last_reply_ids
        return call

    def fresh(model: Any, n: int, is_mmfw: bool) -> Any:
        def call() -> list[int]:
            with torch.no_grad():
                x = _fresh_inputs(pipe, chat, messages, image) if is_mmfw else hf_inputs
                out = model.generate(**x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            return (out[0] if is_mmfw else out[0, prompt_len:]).tolist()
        return call

    ours = chat_turn(new_tokens)()
    calls_after_first = saved[3]
    for name, other in (("mmfw generate", fresh(vlm, new_tokens, True)()),
                        ("transformers generate", fresh(hf, new_tokens, False)())):
        if other != ours:
            raise CheckFailed(f"later turn: chat reply {ours} differs from {name} {other}")
    if chat.vision_encoder_calls != calls_after_first:
        raise CheckFailed("later turn: the chat ran the vision encoder again for a seen image")
    fns = {f"{side}/{n}": fn for n in (1, new_tokens) for side, fn in (
        ("chat", chat_turn(n)), ("mmfw-fresh", fresh(vlm, n, True)), ("transformers-fresh", fresh(hf, n, False)))}
    t = interleaved(fns, repeats)
    sides = {side: {"ttft_ms_min": t[f"{side}/1"]["min"] * 1e3, "ttft_ms_median": t[f"{side}/1"]["median"] * 1e3,
                    "turn_ms_min": t[f"{side}/{new_tokens}"]["min"] * 1e3,
                    "turn_ms_median": t[f"{side}/{new_tokens}"]["median"] * 1e3}
             for side in ("chat", "mmfw-fresh", "transformers-fresh")}
    c = sides["chat"]
    ratios = {f"{key}_{other}_{stat}": sides[f"{other}-fresh"][f"{key}_ms_{stat}"] / c[f"{key}_ms_{stat}"]
              for key in ("ttft", "turn") for other in ("mmfw", "transformers") for stat in ("min", "median")}
    return {"new_tokens": new_tokens, "prompt_tokens": prompt_len, "chat_prefilled": len(saved[1]),
            "check": "identical greedy reply tokens; no vision-encoder call in the chat's later turn",
            "sides": sides, **ratios}
