"""Preprocessing: images/s of mmfw's image strategies vs transformers' image processors, on real photos.

The photos are scikit-image's bundled ``astronaut`` (512x512), ``chelsea`` (451x300) and ``coffee`` (600x400), decoded
once into PIL images; every side gets the same PIL image and returns normalised float pixels, one call per image (as
a data-loading worker does). The transformers processors are those mmfw's exporter maps each strategy to
(``hf_llava_export``): the torchvision ("fast") class and its PIL ("slow", ``...Pil``) twin with the same settings.

Each strategy runs with both of its backends: ``torch`` (the default: uint8 tensor ops) and ``pil`` (Pillow resizes).
Checked before timing: with ``torch`` mmfw's pixels equal the torchvision processor's exactly, with ``pil`` the PIL
processor's within 1e-5 (both resize with PIL); either backend is within a mean absolute difference of 1e-3 of the
other processor's (the largest per-pixel differences are reported).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from PIL import Image

from benchmarks.common import CheckFailed, check_close, interleaved

PHOTOS = ("astronaut", "chelsea", "coffee")
BACKENDS = ("torch", "pil")
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SLOW_TOL, FAST_MEAN_TOL = 1e-5, 1e-3


def photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]


def build_strategy(spec: dict[str, Any], image_size: int, regs: Any, tokenizer: Any) -> Any:
    """The strategy of a model whose CLIP encoder takes ``image_size`` px (tiny widths: only the geometry matters)."""
    from mmfw.config import load_config_dict
    from mmfw.model.builder import build_model

    model = {"vision_encoder": {"type": "clip", "architecture": {
        "image_size": image_size, "patch_size": 14, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": 32}},
        "connector": {"type": "mlp", "depth": 2},
        "llm": {"type": "llama", "tokenizer": str(tokenizer), "architecture": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 4096}},
        "image_strategy": spec}
    cfg = load_config_dict({"model": model, "training": {"max_steps": 1}}, regs)
    vlm, _ = build_model(cfg.model, regs)
    return vlm.image_strategy


def processors(strat: Any) -> tuple[Any, Any]:
    fast = strat.hf_llava_export().image_processor
    slow_cls = getattr(transformers, type(fast).__name__ + "Pil")
    settings = {k: v for k, v in fast.to_dict().items() if k != "image_processor_type"}
    return fast, slow_cls(**settings)


def hf_pixels(proc: Any, image: Image.Image) -> torch.Tensor:
    px = proc(image, return_tensors="pt")["pixel_values"]
    return px.reshape(-1, *px.shape[-3:])  # LlavaNext: (1, tiles, 3, H, W)


def run(smoke: bool, repeats: int, ws: Any, regs: Any, **_: Any) -> dict[str, Any]:
    size = 56 if smoke else 336
    pinpoints = [[size * a // 336, size * b // 336] for a, b in LLAVA_NEXT_PINPOINTS]
    specs = {"pad": {"type": "pad"}, "anyres": {"type": "anyres", "grid_pinpoints": pinpoints},
             "resize": {"type": "resize"}}
    specs = {(name, backend): {**spec, "backend": backend} for name, spec in specs.items() for backend in BACKENDS}
    images = photos()
    rows = []
    inner = 1 if smoke else 5
    for (name, backend), spec in specs.items():
        strat = build_strategy(spec, size, regs, ws.tokenizer)
        fast, slow = processors(strat)
        diffs: dict[str, float] = {"slow_max": 0.0, "fast_max": 0.0, "fast_mean": 0.0}
        for i, im in enumerate(images):
            ours = strat.preprocess(im).pixel_values
            slow_diff = float((ours - hf_pixels(slow, im)).abs().max())
            if backend == "pil":
                check_close(f"{name} {PHOTOS[i]}: mmfw vs {type(slow).__name__}", ours, hf_pixels(slow, im),
                            atol=SLOW_TOL)
            diffs["slow_max"] = max(diffs["slow_max"], slow_diff)
            theirs = hf_pixels(fast, im)
            if ours.shape != theirs.shape:
                raise CheckFailed(f"{name} {PHOTOS[i]}: mmfw {tuple(ours.shape)} vs {type(fast).__name__} "
                                  f"{tuple(theirs.shape)}")
            if backend == "torch" and not torch.equal(ours, theirs):
                raise CheckFailed(f"{name} {PHOTOS[i]}: backend torch differs from {type(fast).__name__} (max "
                                  f"{float((ours - theirs).abs().max()):.3g})")
            mean = float((ours - theirs).abs().mean())
            if mean > FAST_MEAN_TOL:
                raise CheckFailed(f"{name} {PHOTOS[i]}: mean abs difference to {type(fast).__name__} {mean:.3g}")
            diffs["fast_mean"] = max(diffs["fast_mean"], mean)
            diffs["fast_max"] = max(diffs["fast_max"], float((ours - theirs).abs().max()))
        fns = {
            "mmfw": lambda strat=strat: [strat.preprocess(im) for _ in range(inner) for im in images],
            "transformers-fast": lambda fast=fast: [fast(im, return_tensors="pt") for _ in range(inner)
                                                    for im in images],
            "transformers-slow": lambda slow=slow: [slow(im, return_tensors="pt") for _ in range(inner)
                                                    for im in images],
        }
        t = interleaved(fns, repeats)
        n = inner * len(images)
        ips = {k: {"min_s": v["min"], "images_per_s_best": n / v["min"], "images_per_s_median": n / v["median"]}
               for k, v in t.items()}
        rows.append({"strategy": name, "backend": backend, "encoder_px": size, "processors": [type(fast).__name__, type(slow).__name__],
                     "diffs": diffs, "sides": ips,
                     "vs_fast_best": ips["mmfw"]["images_per_s_best"] / ips["transformers-fast"]["images_per_s_best"],
                     "vs_fast_median": ips["mmfw"]["images_per_s_median"]
                     / ips["transformers-fast"]["images_per_s_median"],
                     "vs_slow_best": ips["mmfw"]["images_per_s_best"] / ips["transformers-slow"]["images_per_s_best"]})
    return {"name": "preprocessing", "tolerance": f"backend torch: identical to the torchvision processor; backend "
            f"pil: PIL processor {SLOW_TOL} max abs, torchvision processor {FAST_MEAN_TOL} mean abs",
            "photos": list(PHOTOS), "rows": rows}
