"""Benchmark: padding-free packing, length grouping and modality grouping vs padded batches, on a length-skewed
dataset.

    python benchmarks/packing.py [--samples 480] [--threads 1] [--hidden 256] [--patch-size 16] [--out results.json]

Builds a VLM (CLIP + MLP + Llama, random init) and a LLaVA-format dataset whose lengths are skewed like instruction
data (80% of the samples 30-130 tokens, 20% 130-480, a quarter of them with an image of ``(64 / patch_size)^2``
tokens), then trains one epoch over the same samples in each mode (``modality-grouped``: batches of image samples
or of text-only samples, each grouped by length, ``training.group_by_modality``) and reports:

* ``efficiency``: real tokens / computed tokens (padding is computed but useless);
* ``tokens/s``: real tokens per second of training (forward, backward, AdamW step), data already collated, so the
  number measures the model work that packing changes, not image decoding;
* ``loss@init``: the token-mean loss of the epoch at the initial weights (the same samples, so the same value in
  every mode: a sanity check that packing changes nothing but speed).

Only public tools: the mmfw components and samplers, torch, ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmfw.components import collect_registries, make_plugin_manager
from mmfw.config import load_config_dict
from mmfw.config.experiment import DatasetSpec
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.data.packing import PackedCollator
from mmfw.data.synth import generate_synthetic_vqa
from mmfw.data.tokenizer_train import texts_from_llava_json, train_tokenizer
from mmfw.model.builder import build_model
from mmfw.training.loss import supervised_tokens, token_loss_sum
from mmfw.training.sampling import (
    LengthGroupedBatchSampler,
    ModalityGroupedBatchSampler,
    PackedBatchSampler,
    ShuffledBatchSampler,
)

WORDS = ("red green blue yellow circle square triangle left right top bottom the a shape color is there one two "
         "three four image picture of in on").split()


def skewed_records(n: int, images: list[str], seed: int) -> list[dict[str, Any]]:
    """LLaVA records with answer lengths skewed like instruction data; a quarter of them with an image."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.randint(12, 100) if rng.random() < 0.8 else rng.randint(100, 420)
        answer = " ".join(rng.choice(WORDS) for _ in range(words))
        question = "describe the picture" if i % 4 == 0 else "tell me about shapes"
        rec: dict[str, Any] = {"id": f"s{i}", "conversations": [
            {"from": "human", "value": ("<image>\n" if i % 4 == 0 else "") + question},
            {"from": "gpt", "value": answer}]}
        if i % 4 == 0:
            rec["image"] = images[i % len(images)]
        out.append(rec)
    return out


def model_config(tokenizer: Path, hidden: int, layers: int, patch_size: int = 16) -> dict[str, Any]:
    return {
        "vision_encoder": {"type": "clip", "architecture": {
            "image_size": 64, "patch_size": patch_size, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "projection_dim": 128}},
        "connector": {"type": "mlp", "depth": 2},
        "llm": {"type": "llama", "tokenizer": str(tokenizer), "architecture": {
            "hidden_size": hidden, "intermediate_size": 3 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": max(2, hidden // 64), "max_position_embeddings": 1024}},
        "image_strategy": {"type": "resize"},
    }


def batches_for(mode: str, items: list[dict[str, Any]], lengths: list[int], pad_id: int, batch_size: int,
                pack_length: int, seed: int) -> list[dict[str, Any]]:
    if mode == "packed":
        sampler = PackedBatchSampler(lengths, pack_length, max(1, batch_size * sum(lengths) // len(lengths)
                                                                // pack_length), seed)
        collate = PackedCollator(pad_id)
        return [collate([{**items[i], "row": r} for i, r in batch]) for batch in sampler]
    if mode == "modality-grouped":
        has_image = [len(it["images"]) > 0 for it in items]
        sampler: Any = ModalityGroupedBatchSampler(lengths, has_image, batch_size, seed)
    elif mode == "length-grouped":
        sampler = LengthGroupedBatchSampler(lengths, batch_size, seed)
    else:
        sampler = ShuffledBatchSampler(len(items), batch_size, seed)
    collate = VLMCollator(pad_id)
    return [collate([items[i] for i in batch]) for batch in sampler]


def run_epoch(model: Any, batches: list[dict[str, Any]], train: bool) -> tuple[float, float]:
    """(seconds, token-mean loss) of one pass; with ``train``, forward + backward + AdamW step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4) if train else None
    loss_sum, tokens = 0.0, 0
    start = time.perf_counter()
    for batch in batches:
        inputs = batch.model_inputs()
        with torch.set_grad_enabled(train):
            logits = model(**inputs, use_cache=False).logits
            ce = token_loss_sum(logits, batch.labels)
            n = supervised_tokens(batch.labels)
            if train:
                (ce / n).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        loss_sum += float(ce.detach())
        tokens += n
    return time.perf_counter() - start, loss_sum / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=16, help="samples per padded batch")
    parser.add_argument("--pack-length", type=int, default=512, help="row capacity of packed batches")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=16, help="vision patch size: an image is (64 / p)^2 tokens")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per mode (the best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registries = collect_registries(make_plugin_manager(load_entry_points=False))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synth = generate_synthetic_vqa(tmp / "synth", num_train=64, num_eval=8, image_size=64, seed=args.seed)
        images = [r["image"] for r in json.loads(Path(synth.train).read_text())]
        records = skewed_records(args.samples, images, args.seed)
        data = Path(synth.train).parent / "skewed.json"
        data.write_text(json.dumps(records))
        train_tokenizer(list(texts_from_llava_json([data])), tmp / "tok", vocab_size=512)
        cfg = load_config_dict({"model": model_config(tmp / "tok", args.hidden, args.layers, args.patch_size),
                                "training": {"max_steps": 1}}, registries)
        torch.manual_seed(args.seed)
        model, tokenizer = build_model(cfg.model, registries)
        initial = copy.deepcopy(model.state_dict())
        ds = LlavaDataset([DatasetSpec(path=str(data))], tokenizer, model.image_strategy, image_token="<image>",
                          max_length=args.pack_length)
        items = [ds[i] for i in range(len(ds))]
        lengths = [len(it["input_ids"]) for it in items]

        modes = ("padded", "length-grouped", "modality-grouped", "packed")
        prepared, results = {}, {}
        for mode in modes:
            batches = batches_for(mode, items, lengths, tokenizer.pad_token_id, args.batch_size, args.pack_length,
                                  args.seed)
            model.load_state_dict(initial)
            model.eval()
            _, loss = run_epoch(model, batches, train=False)
            prepared[mode] = batches
            results[mode] = {"batches": len(batches), "real_tokens": sum(b.real_tokens() for b in batches),
                             "computed_tokens": sum(int(b.input_ids.numel()) for b in batches),
                             "seconds": float("inf"), "loss_at_init": loss}
        # modes interleaved in every repeat and the best time kept: a busy machine slows all modes alike
        for _ in range(args.repeats):
            for mode in modes:
                model.load_state_dict(initial)
                model.train()
                run_epoch(model, prepared[mode][:2], train=True)  # warm-up
                model.load_state_dict(initial)
                seconds, _ = run_epoch(model, prepared[mode], train=True)
                results[mode]["seconds"] = min(results[mode]["seconds"], seconds)
        for r in results.values():
            r["efficiency"] = r["real_tokens"] / r["computed_tokens"]
            r["tokens_per_s"] = r["real_tokens"] / r["seconds"]

    base = results["padded"]["tokens_per_s"]
    lines = [f"{args.samples} samples, lengths {min(lengths)}-{max(lengths)} (mean {sum(lengths) / len(lengths):.0f}, "
             f"median {sorted(lengths)[len(lengths) // 2]}); LLM hidden {args.hidden} x {args.layers} layers; "
             f"{args.threads} thread(s)",
             "", "| mode | batches | efficiency | tokens/s | speed-up | loss@init |", "|---|---:|---:|---:|---:|---:|"]
    for mode, r in results.items():
        lines.append(f"| {mode} | {r['batches']} | {r['efficiency']:.3f} | {r['tokens_per_s']:.0f} | "
                     f"{r['tokens_per_s'] / base:.2f}x | {r['loss_at_init']:.5f} |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "lengths": {
            "min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)}, "results": results},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
