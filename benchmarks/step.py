"""Training step: forward + backward + AdamW of a tiny CLIP + MLP + Llama model, mmfw vs ``LlavaForConditionalGeneration``.

Both models hold the same weights (mmfw's exporter maps them) and get the same right-padded batch. mmfw's step is
its trainer's: logits only at supervised positions (``logit_positions``), float32 cross-entropy summed and divided by
the supervised tokens. transformers' step is ``model(..., labels=labels).loss``. Checked before timing: the losses
(1e-5 relative) and every parameter's gradient (1e-4 of the largest gradient of that tensor plus 1e-6) agree.
A third side, ``mmfw (training.compile)``, is mmfw's model with each component's inner model compiled in place
(:func:`mmfw.training.stage_model.compile_components`), checked the same way; its compilation (the first call) is
timed separately and not in the steps (not run with ``--smoke``). Each side steps fused AdamW, the default of both
trainers. CPU MFU = FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` for one step / step time / the matmul peak
measured in this process (the best fp32 square ``torch.mm`` of 256, 512 and 1024, before and after the timed
steps).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import (
    CheckFailed,
    Sizes,
    build_pair,
    check_close,
    count_flops,
    dataset_items,
    interleaved,
    matmul_peak,
    model_dict,
    padded_batch,
)

COMPILED = "mmfw (training.compile)"


def mmfw_loss(vlm: Any, batch: dict[str, Any]) -> torch.Tensor:
    from mmfw.training.loss import logit_positions, supervised_tokens, token_loss_sum

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    positions = logit_positions(labels)
    logits = vlm(**inputs, use_cache=False, logits_to_keep=positions).logits
    return token_loss_sum(logits, labels, positions) / supervised_tokens(labels)


def hf_loss(hf: Any, batch: dict[str, Any]) -> torch.Tensor:
    return hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              pixel_values=batch.get("pixel_values"), labels=batch["labels"], use_cache=False).loss


def hf_name(key: str) -> str:
    from mmfw.export.llava_names import hf_llava_name

    return hf_llava_name(key)


def check_gradients(vlm: Any, hf: Any, batch: dict[str, Any], label: str = "mmfw") -> dict[str, float]:
    vlm.zero_grad(set_to_none=True)
    hf.zero_grad(set_to_none=True)
    a, b = mmfw_loss(vlm, batch), hf_loss(hf, batch)
    check_close(f"step: loss {label} vs transformers", a.detach(), b.detach(), atol=0.0, rtol=1e-5)
    a.backward()
    b.backward()
    theirs = dict(hf.named_parameters())
    worst, compared = 0.0, 0
    for name, p in vlm.named_parameters():
        q = theirs[hf_name(name)]
        if p.grad is None or q.grad is None:
            if (p.grad is None) != (q.grad is None):
                raise CheckFailed(f"step: gradient of {name} exists on one side only")
            continue
        scale = float(q.grad.abs().max())
        diff = check_close(f"step: {label} gradient of {name}", p.grad, q.grad, atol=1e-6 + 1e-4 * scale)
        if scale > 1e-6:  # relative to the tensor's largest gradient; tensors whose gradient is ~0 (a key bias's is
            worst = max(worst, diff / scale)  # exactly 0 in exact arithmetic) are held to the absolute 1e-6 only
        compared += 1
    vlm.zero_grad(set_to_none=True)
    hf.zero_grad(set_to_none=True)
    return {"loss_mmfw": float(a.detach()), "loss_transformers": float(b.detach()), "grad_tensors": compared,
            "max_grad_rel_diff": worst}


def run(smoke: bool, repeats: int, ws: Any, regs: Any, sizes: Sizes, **_: Any) -> dict[str, Any]:
    vlm, tok, _cfg, hf = build_pair(model_dict(ws.tokenizer, sizes), regs)
    items = dataset_items(ws, vlm, tok, sizes.batch_size, max_length=512)
    batch = padded_batch(items, tok.pad_token_id, vlm.image_token_id)
    vlm.train()
    hf.train()
    checks = check_gradients(vlm, hf, batch)
    models = {"mmfw": vlm, "transformers": hf}
    losses = {"mmfw": lambda: mmfw_loss(vlm, batch), "transformers": lambda: hf_loss(hf, batch)}
    compile_s = None
    if not smoke:
        import copy
        import time

        from mmfw.training.stage_model import compile_components

        compiled = copy.deepcopy(vlm)
        compile_components(compiled)
        start = time.perf_counter()
        checks["compiled"] = check_gradients(compiled, hf, batch, label=COMPILED)  # compiles forward and backward
        compile_s = time.perf_counter() - start
        models[COMPILED] = compiled
        losses[COMPILED] = lambda: mmfw_loss(compiled, batch)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for name, m in models.items()}

    def step(name: str) -> Any:
        def call() -> None:
            losses[name]().backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
        return call

    flops = {name: count_flops(lambda name=name: losses[name]().backward()) for name in losses if name != COMPILED}
    if COMPILED in losses:
        flops[COMPILED] = flops["mmfw"]  # the same model and work (the flop counter cannot see inside compiled code)
    for m in models.values():
        m.zero_grad(set_to_none=True)
    window = 0.1 if smoke else 0.5
    before = matmul_peak(seconds=window)
    t = interleaved({name: step(name) for name in losses}, repeats)
    after = matmul_peak(seconds=window)  # the best of before and after the runs, per size
    peaks = {n: max(before[n], after[n]) for n in before}
    peak = max(peaks.values())
    real = int(batch["attention_mask"].sum())
    out: dict[str, Any] = {"name": "step", "batch": list(batch["input_ids"].shape), "real_tokens": real,
                           "checks": checks, "matmul_peak_gflops": peak / 1e9,
                           "matmul_gflops_by_size": {n: v / 1e9 for n, v in peaks.items()}, "sides": {}}
    for name in losses:
        out["sides"][name] = {"s_min": t[name]["min"], "s_median": t[name]["median"], "gflop": flops[name] / 1e9,
                              "mfu_min": flops[name] / t[name]["min"] / peak,
                              "tokens_per_s_min": real / t[name]["min"]}
    out["speedup_min"] = t["transformers"]["min"] / t["mmfw"]["min"]
    out["speedup_median"] = t["transformers"]["median"] / t["mmfw"]["median"]
    if COMPILED in t:
        out["compiled"] = {"compile_s": compile_s, "speedup_min": t["transformers"]["min"] / t[COMPILED]["min"],
                           "speedup_median": t["transformers"]["median"] / t[COMPILED]["median"]}
    return out
