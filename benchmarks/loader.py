"""Loader vs step: samples/s mmfw's data loading delivers with one worker process against samples/s a training step
consumes, at 336 px.

Data: the synthetic VQA conversations with scikit-image's photos (``astronaut``, ``chelsea``, ``coffee``, saved as
JPEG files) as their images, so each sample is decoded from a file, preprocessed by the ``pad`` strategy at 336 px
and tokenized, as in training. Loader: ``torch.utils.data.DataLoader`` over mmfw's ``LlavaDataset`` with
``VLMCollator``, batches of ``batch_size``, ``num_workers=1``; timed from the first batch to the last of one pass (the
worker's start-up excluded). Step: forward + backward + AdamW of the training-step benchmark's model with a 336 px
CLIP encoder (576 patches per image) on the loader's first batch. The two are interleaved.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from benchmarks.common import Sizes, build_pair, interleaved, model_dict, padded_batch

PHOTO_NAMES = ("astronaut", "chelsea", "coffee")


def write_photo_dataset(ws: Any, n: int) -> Any:
    """A LLaVA JSON of the first ``n`` synthetic records, their images replaced by the photos (JPEG files)."""
    from benchmarks.preprocessing import photos

    root = ws.root / "photos"
    root.mkdir(exist_ok=True)
    for name, im in zip(PHOTO_NAMES, photos(), strict=True):
        im.save(root / f"{name}.jpg", quality=90)
    records = [r for r in json.loads(ws.train_json.read_text()) if "image" in r][:n]
    for i, r in enumerate(records):
        r["image"] = f"{PHOTO_NAMES[i % len(PHOTO_NAMES)]}.jpg"
    path = root / "train.json"
    path.write_text(json.dumps(records))
    return path


def run(smoke: bool, repeats: int, ws: Any, regs: Any, sizes: Sizes, **_: Any) -> dict[str, Any]:
    from benchmarks.step import mmfw_loss
    from mmfw.config.experiment import DatasetSpec
    from mmfw.data.collator import VLMCollator
    from mmfw.data.dataset import LlavaDataset

    px = 56 if smoke else 336
    at_px = Sizes(**{**vars(sizes), "image_size": px})
    vlm, tok, _cfg, _hf = build_pair(model_dict(ws.tokenizer, at_px), regs)
    bs, workers = sizes.batch_size, 0 if smoke else 1
    n = bs * (2 if smoke else 8)
    ds = LlavaDataset([DatasetSpec(path=str(write_photo_dataset(ws, n)))], tok, vlm.image_strategy,
                      image_token="<image>", max_length=1024)
    collate = VLMCollator(tok.pad_token_id)

    def one_pass() -> None:
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, collate_fn=collate, num_workers=workers)
        it = iter(loader)
        next(it)  # the worker is up and has delivered its first batch
        start = time.perf_counter()
        count = sum(b.rows for b in it)
        pass_times.append((time.perf_counter() - start, count))

    first = padded_batch([ds[i] for i in range(bs)], tok.pad_token_id, vlm.image_token_id)
    vlm.train()
    opt = torch.optim.AdamW(vlm.parameters(), lr=1e-4)

    def step() -> None:
        mmfw_loss(vlm, first).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    pass_times: list[tuple[float, int]] = []
    t = interleaved({"loader": one_pass, "step": step}, repeats)
    rates = sorted(c / s for s, c in pass_times[1:])  # the warm-up pass left out
    loader_best, loader_median = rates[-1], rates[len(rates) // 2]
    step_best, step_median = bs / t["step"]["min"], bs / t["step"]["median"]
    return {"name": "loader", "encoder_px": px, "batch_size": bs, "num_workers": workers, "samples": len(ds),
            "image_tokens": vlm.image_strategy.num_tokens((px, px)), "batch_shape": list(first["input_ids"].shape),
            "loader_samples_per_s_best": loader_best, "loader_samples_per_s_median": loader_median,
            "step_s_min": t["step"]["min"], "step_s_median": t["step"]["median"],
            "step_samples_per_s_best": step_best, "step_samples_per_s_median": step_median,
            "ratio_best": loader_best / step_best, "ratio_median": loader_median / step_median}
