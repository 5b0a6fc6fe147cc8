"""End to end: ``mmfw train`` with its defaults vs the LLaVA recipe as its users run it (transformers' ``Trainer``
with ``LlavaForConditionalGeneration``, padded batches).

Both sides train the same tiny CLIP + MLP + Llama model from the same initial weights (built by mmfw's builder with
the experiment seed, as ``mmfw train`` does, and exported to transformers) for one epoch over the same samples
(mmfw's LLaVA dataset: chat template, image strategy, labels), with the same optimizer settings (AdamW, learning
rate, cosine schedule, warmup, gradient clipping). mmfw packs samples into rows (``packing: true``), with as many rows
per step as hold about the padded side's samples per step. Each side runs in its own process (interleaved over the
repeats), timed around the training call only: real tokens/s = the epoch's real tokens / that wall time.

The final models are compared on the held-out split: token-mean loss on the same padded batches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Sizes, Workspace, model_dict, pin_threads, write_json

SEED = 0
HYPER = {"learning_rate": 1e-3, "warmup_ratio": 0.05, "weight_decay": 0.0, "max_grad_norm": 1.0}


def experiment(ws: Workspace, sizes: Sizes, out_dir: Path, rows: int, max_length: int,
               train: Path | None = None) -> dict[str, Any]:
    return {"name": "bench-e2e", "seed": SEED, "output_dir": str(out_dir), "model": model_dict(ws.tokenizer, sizes),
            "data": {"train": [{"path": str(train or ws.train_json)}], "max_length": max_length},
            "training": {"epochs": 1, "batch_size": rows, "packing": True, "lr_scheduler": "cosine",
                         "log_every": 4, "policy": {"vision_encoder": "full", "connector": "full", "llm": "full"},
                         **HYPER}}


def initial_models(exp: dict[str, Any], regs: Any) -> tuple[Any, Any, Any]:
    """mmfw's initial model as ``mmfw train`` builds it (seed, then the builder) and its transformers twin."""
    from accelerate.utils import set_seed

    from benchmarks.common import build_pair

    set_seed(SEED)
    vlm, tok, _cfg, hf = build_pair(exp["model"], regs, seed=SEED)
    return vlm, tok, hf


def eval_loss(forward: Any, batches: list[dict[str, Any]]) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            count = int((b["labels"][:, 1:] != -100).sum())
            total += float(forward(b)) * count
            n += count
    return total / n


def run_mmfw(exp_path: Path) -> dict[str, Any]:
    from mmfw.cli.main import main

    start = time.perf_counter()
    code = main(["-q", "train", str(exp_path), "--overwrite", "--no-progress"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"mmfw train {exp_path} exited with {code}")
    run_dir = Path(json.loads(exp_path.read_text())["output_dir"])
    curve = [(r["step"], r["train/loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in r]
    return {"seconds": seconds, "curve": curve, "run_dir": str(run_dir)}


class _Collate:
    def __init__(self, pad_id: int, image_token_id: int) -> None:
        self.pad_id, self.image_token_id = pad_id, image_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from benchmarks.common import padded_batch

        b = padded_batch(items, self.pad_id, self.image_token_id)
        return {k: b[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels") if k in b}


def run_transformers(exp: dict[str, Any], regs: Any, batch_size: int, out_dir: Path) -> dict[str, Any]:
    from transformers import Trainer, TrainingArguments

    from mmfw.config.experiment import DatasetSpec
    from mmfw.data.dataset import LlavaDataset

    _vlm, tok, hf = initial_models(exp, regs)
    start = time.perf_counter()
    ds = LlavaDataset([DatasetSpec(path=exp["data"]["train"][0]["path"])], tok, _vlm.image_strategy,
                      image_token="<image>", max_length=exp["data"]["max_length"])
    steps = math.ceil(len(ds) / batch_size)
    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=batch_size, num_train_epochs=1,
                             learning_rate=HYPER["learning_rate"], weight_decay=HYPER["weight_decay"],
                             max_grad_norm=HYPER["max_grad_norm"], lr_scheduler_type="cosine",
                             warmup_steps=int(HYPER["warmup_ratio"] * steps),
                             logging_steps=4, save_strategy="no", report_to="none", use_cpu=True, seed=SEED,
                             dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=hf.train(), args=args, train_dataset=ds,
                      data_collator=_Collate(tok.pad_token_id, _vlm.image_token_id))
    trainer.train()
    hf.save_pretrained(out_dir / "final")
    seconds = time.perf_counter() - start
    curve = [(r["step"], r["loss"]) for r in trainer.state.log_history if "loss" in r]
    loop = next(r["train_runtime"] for r in trainer.state.log_history if "train_runtime" in r)
    return {"seconds": seconds, "curve": curve, "final": str(out_dir / "final"), "loop_seconds": loop}


def side_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("side", choices=("mmfw", "transformers"))
    p.add_argument("spec", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    spec = json.loads(a.spec.read_text())
    pin_threads(spec["threads"])
    # both sides import their libraries before the clock starts (the process wall, imports included, is reported too)
    import transformers.models.clip.modeling_clip  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    import transformers.models.llava.modeling_llava  # noqa: F401
    from transformers import Trainer  # noqa: F401

    import mmfw.builtin  # noqa: F401
    import mmfw.cli.main  # noqa: F401
    import mmfw.training  # noqa: F401
    from benchmarks.common import registries
    from mmfw.training.plots import _pyplot

    _pyplot()  # matplotlib, which mmfw train draws plots/loss.png with (a library import, like the ones above)

    if a.side == "mmfw":
        result = run_mmfw(Path(spec["experiment"]))
    else:
        exp = json.loads(Path(spec["experiment"]).read_text())
        result = run_transformers(exp, registries(), spec["batch_size"], Path(spec["hf_dir"]))
    write_json(a.out, result)


def run(smoke: bool, repeats: int, ws: Any, regs: Any, sizes: Sizes, threads: int, train: Path | None = None,
        max_length: int = 256, name: str = "end_to_end", **_: Any) -> dict[str, Any]:
    """One comparison on ``train`` (default: the workspace's synthetic VQA records)."""
    from benchmarks.common import dataset_items, padded_batch

    exp0 = experiment(ws, sizes, ws.root / "e2e-mmfw", rows=1, max_length=max_length)
    vlm, tok, hf0 = initial_models(exp0, regs)
    items = dataset_items(ws, vlm, tok, 10**9, max_length, path=train)
    if train is not None and not all(isinstance(it, dict) for it in items):
        # records the dataset would skip (too long to keep their image): left out of the data both sides train on
        records = json.loads(train.read_text())
        train = train.with_name(train.stem + ".kept.json")
        train.write_text(json.dumps([r for r, it in zip(records, items, strict=True) if isinstance(it, dict)]))
        items = [it for it in items if isinstance(it, dict)]
    lengths = [len(it["input_ids"]) for it in items]
    real = sum(lengths)
    bs = sizes.batch_size
    rows = max(1, round(bs * (sum(lengths) / len(lengths)) / max_length))
    exp = experiment(ws, sizes, ws.root / "e2e-mmfw", rows=rows, max_length=max_length, train=train)
    exp_path = ws.root / "e2e-experiment.json"
    exp_path.write_text(json.dumps(exp))
    spec = ws.root / "e2e-spec.json"
    spec.write_text(json.dumps({"experiment": str(exp_path), "threads": threads, "batch_size": bs,
                                "hf_dir": str(ws.root / "e2e-hf")}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    repeats = min(repeats, 3)  # whole training runs: at most 3 per side
    results: dict[str, list[dict[str, Any]]] = {"mmfw": [], "transformers": []}
    for r in range(repeats):
        for side in ("mmfw", "transformers") if r % 2 == 0 else ("transformers", "mmfw"):
            out = ws.root / f"e2e-{side}-{r}.json"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "benchmarks.end_to_end", side, str(spec), str(out)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"end to end, {side} side failed:\n{proc.stderr[-3000:]}")
            results[side].append(json.loads(out.read_text()) | {"process_seconds": time.perf_counter() - start})

    # final models on the held-out split, same padded batches
    from transformers import LlavaForConditionalGeneration

    from benchmarks.step import hf_loss, mmfw_loss
    from mmfw.model.io import load_model_dir

    eval_items = dataset_items(ws, vlm, tok, 64, max_length, path=ws.eval_json)
    eval_batches = [padded_batch(eval_items[i:i + 16], tok.pad_token_id, vlm.image_token_id)
                    for i in range(0, len(eval_items), 16)]
    ours, _, _ = load_model_dir(results["mmfw"][-1]["run_dir"], regs)
    theirs = LlavaForConditionalGeneration.from_pretrained(results["transformers"][-1]["final"]).eval()
    init = eval_loss(lambda b: mmfw_loss(vlm, b), eval_batches)
    losses = {"mmfw": eval_loss(lambda b: mmfw_loss(ours.eval(), b), eval_batches),
              "transformers": eval_loss(lambda b: hf_loss(theirs, b), eval_batches)}
    sides = {}
    for side, runs in results.items():
        secs = sorted(x["seconds"] for x in runs)
        sides[side] = {"s_min": secs[0], "s_median": secs[len(secs) // 2] if len(secs) % 2 else
                       (secs[len(secs) // 2 - 1] + secs[len(secs) // 2]) / 2,
                       "real_tokens_per_s_best": real / secs[0], "final_train_loss": runs[-1]["curve"][-1][1],
                       "eval_loss": losses[side], "curve": runs[-1]["curve"], "runs_s": [x["seconds"] for x in runs],
                       "process_s_min": min(x["process_seconds"] for x in runs)}
    sides["mmfw"]["steps"] = sides["mmfw"]["curve"][-1][0]
    sides["transformers"]["steps"] = math.ceil(len(items) / bs)
    padded = sum(max(lengths[i:i + bs]) * len(lengths[i:i + bs]) for i in range(0, len(lengths), bs))
    return {"name": name, "data": str(train or ws.train_json), "padded_efficiency_in_order": real / padded,
            "repeats": repeats, "samples": len(items), "real_tokens": real, "padded_batch_size": bs,
            "packed_rows_per_step": rows, "pack_length": max_length, "eval_loss_at_init": init, "sides": sides,
            "speedup_min": sides["transformers"]["s_min"] / sides["mmfw"]["s_min"],
            "speedup_median": sides["transformers"]["s_median"] / sides["mmfw"]["s_median"]}


if __name__ == "__main__":
    side_main(sys.argv[1:])
