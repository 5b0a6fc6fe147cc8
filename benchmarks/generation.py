"""Generation: mmfw ``VisionLanguageModel.generate`` vs transformers' ``LlavaForConditionalGeneration.generate``.

Same weights, same left-padded prompts (one image each, from mmfw's inference pipeline), greedy decoding. Checked
before timing: both produce the same new token ids. Reported: time to first token (a call with
``max_new_tokens=1``), ms per further token ((t(N) - t(1)) / (N - 1)) at batch 1 and 8, and how many times the vision
encoder's forward runs per call (counted by a forward hook).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import CheckFailed, Sizes, build_pair, dataset_items, interleaved, model_dict, padded_batch


class CallCounter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1


def generator(model: Any, is_mmfw: bool, inputs: dict[str, torch.Tensor], n: int, kwargs: dict[str, Any]) -> Any:
    """A call generating exactly ``n`` new tokens; returns only the new ids (transformers returns the prompt too)."""
    prompt_len = inputs["input_ids"].shape[1]

    def call() -> torch.Tensor:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **kwargs)
        return out if is_mmfw else out[:, prompt_len:]
    return call


def run(smoke: bool, repeats: int, ws: Any, regs: Any, sizes: Sizes, **_: Any) -> dict[str, Any]:
    vlm, tok, _cfg, hf = build_pair(model_dict(ws.tokenizer, sizes), regs)
    new_tokens = 4 if smoke else 32
    batch_sizes = (1, 2) if smoke else (1, 8)
    items = dataset_items(ws, vlm, tok, max(batch_sizes), max_length=512)
    # prompts only: cut each sample before its answer (first supervised label)
    prompts = []
    for it in items:
        first = next(i for i, lab in enumerate(it["labels"]) if lab != -100)
        prompts.append({**it, "input_ids": list(it["input_ids"][:first]), "labels": [-100] * first})
    counters = {"mmfw": CallCounter(vlm.vision_encoder), "transformers": CallCounter(hf.model.vision_tower)}
    # transformers stops at eos; mmfw's LLM generate too: stop neither early so both decode exactly N tokens
    common = {"do_sample": False, "eos_token_id": None, "pad_token_id": tok.pad_token_id}
    rows = []
    for bs in batch_sizes:
        batch = padded_batch(prompts[:bs], tok.pad_token_id, vlm.image_token_id, padding_side="left")
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        prompt_len = inputs["input_ids"].shape[1]

        def gen(name: str, n: int, inputs: dict[str, torch.Tensor] = inputs) -> Any:
            return generator(vlm if name == "mmfw" else hf, name == "mmfw", inputs, n, common)

        ours, theirs = gen("mmfw", new_tokens)(), gen("transformers", new_tokens)()
        if ours.shape != theirs.shape or not torch.equal(ours, theirs):
            raise CheckFailed(f"generation batch {bs}: different tokens, mmfw {ours.tolist()} vs transformers "
                              f"{theirs.tolist()}")
        calls = {}
        for name, counter in counters.items():
            before = counter.calls
            gen(name, new_tokens)()
            calls[name] = counter.calls - before
        fns = {f"{name}/{n}": gen(name, n) for name in ("mmfw", "transformers") for n in (1, new_tokens)}
        t = interleaved(fns, repeats)
        side = {}
        for name in ("mmfw", "transformers"):
            first, full = t[f"{name}/1"], t[f"{name}/{new_tokens}"]
            side[name] = {"ttft_ms_min": first["min"] * 1e3, "ttft_ms_median": first["median"] * 1e3,
                          "ms_per_token_min": (full["min"] - first["min"]) / (new_tokens - 1) * 1e3,
                          "ms_per_token_median": (full["median"] - first["median"]) / (new_tokens - 1) * 1e3,
                          "call_ms_min": full["min"] * 1e3, "call_ms_median": full["median"] * 1e3,
                          "vision_calls": calls[name]}
        rows.append({"batch": bs, "prompt_tokens": prompt_len, "new_tokens": new_tokens, "sides": side,
                     "speedup_call_min": side["transformers"]["call_ms_min"] / side["mmfw"]["call_ms_min"],
                     "speedup_call_median": side["transformers"]["call_ms_median"] / side["mmfw"]["call_ms_median"]})
    from benchmarks.later_turn import measure
    from benchmarks.preprocessing import photos

    later = measure(vlm, tok, _cfg, hf, photos()[1], 4 if smoke else 8, repeats)
    return {"name": "generation", "check": "identical greedy token ids", "rows": rows, "later_turn": later}
