"""Shared tools of the benchmark suite: pinned threads, interleaved timing, op and FLOP counting, the tiny models.

Every comparison follows the same order: build both sides from one state dict, check that they compute the same
thing (a failed check raises :class:`CheckFailed` and fails the benchmark), and only then time them, the sides
interleaved in every repeat (A B, B A, ...) so that a busy machine slows them alike; ``min`` and ``median`` of the
repeats are reported.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class CheckFailed(AssertionError):
    """The two sides of a comparison do not compute the same thing: nothing is timed."""


def pin_threads(threads: int) -> None:
    """Pin torch's intra- and inter-op threads and the OpenMP/MKL environment to ``threads``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set once in this process
        pass


def machine() -> dict[str, Any]:
    import transformers

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "loadavg_at_start": None if load is None else [round(x, 2) for x in load]}


def summary(seconds: list[float]) -> dict[str, Any]:
    return {"min": min(seconds), "median": statistics.median(seconds), "runs": seconds}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict[str, Any]]:
    """Seconds per call of every ``fns`` entry: ``warmup`` untimed calls each, then ``repeats`` rounds in which every
    entry runs once, the order reversed every other round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: summary(t) for name, t in times.items()}


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count_ops(fn: Callable[[], Any]) -> int:
    with OpCounter() as counter:
        fn()
    return counter.total


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(sizes: tuple[int, ...] = (256, 512, 1024), seconds: float = 0.5) -> dict[int, float]:
    """FLOP/s of square fp32 matmuls on this process's threads, per size: the best call within ``seconds`` each.

    The peak of an MFU is the largest of them (small matmuls stay in cache; on a shared machine large ones lose
    more to the neighbours' memory traffic)."""
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        out[n] = 2 * n**3 / best
    return out


def check_close(what: str, a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float = 0.0) -> float:
    """Raise :class:`CheckFailed` unless ``a`` and ``b`` agree; returns the largest absolute difference."""
    if a.shape != b.shape:
        raise CheckFailed(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    limit = atol + rtol * float(b.double().abs().max() if b.numel() else 0.0)
    if not diff <= limit:
        raise CheckFailed(f"{what}: max abs difference {diff:.3g} > tolerance {limit:.3g}")
    return diff


# --- the tiny CLIP + MLP + Llama model shared by the step, generation and end-to-end benchmarks -------------------

@dataclass
class Sizes:
    """Model and data sizes of one run (smoke or full)."""

    image_size: int = 112
    patch_size: int = 14
    vision_hidden: int = 128
    vision_layers: int = 3
    llm_hidden: int = 256
    llm_layers: int = 4
    vocab_size: int = 512
    batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


def model_dict(tokenizer: Path, sizes: Sizes, strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    s = sizes
    return {
        "vision_encoder": {"type": "clip", "architecture": {
            "image_size": s.image_size, "patch_size": s.patch_size, "hidden_size": s.vision_hidden,
            "intermediate_size": 4 * s.vision_hidden, "num_hidden_layers": s.vision_layers,
            "num_attention_heads": max(2, s.vision_hidden // 64), "projection_dim": s.vision_hidden}},
        "connector": {"type": "mlp", "depth": 2},
        "llm": {"type": "llama", "tokenizer": str(tokenizer), "architecture": {
            "hidden_size": s.llm_hidden, "intermediate_size": 3 * s.llm_hidden, "num_hidden_layers": s.llm_layers,
            "num_attention_heads": max(2, s.llm_hidden // 64), "max_position_embeddings": 1024}},
        "image_strategy": strategy or {"type": "pad"},
    }


@dataclass
class Workspace:
    """Synthetic VQA data and a tokenizer trained on it, made once per suite run in ``root``."""

    root: Path
    train_json: Path
    eval_json: Path
    tokenizer: Path

    @classmethod
    def create(cls, root: Path, num_train: int, image_size: int, vocab_size: int) -> Workspace:
        from mmfw.data.synth import generate_synthetic_vqa
        from mmfw.data.tokenizer_train import texts_from_llava_json, train_tokenizer

        synth = generate_synthetic_vqa(root / "synth", num_train=num_train, num_eval=64, image_size=image_size,
                                       seed=0)
        tok = root / "tokenizer"
        train_tokenizer(list(texts_from_llava_json([synth.train])), tok, vocab_size=vocab_size)
        return cls(root, Path(synth.train), Path(synth.eval), tok)


def registries() -> Any:
    from mmfw.components import collect_registries, make_plugin_manager

    return collect_registries(make_plugin_manager(load_entry_points=False))


def build_pair(model: dict[str, Any], regs: Any, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """``(mmfw model, tokenizer, experiment config, transformers model)`` holding the same weights (copies).

    The transformers model is built from the config mmfw's exporter writes (:func:`mmfw.export.build_hf_llava`) and
    loaded with a copy of the exported state dict, strictly: every transformers parameter comes from mmfw.
    """
    from mmfw.config import load_config_dict
    from mmfw.export import build_hf_llava
    from mmfw.model.builder import build_model

    cfg = load_config_dict({"model": model, "training": {"max_steps": 1}}, regs)
    torch.manual_seed(seed)
    vlm, tok = build_model(cfg.model, regs)
    exported = build_hf_llava(vlm, tok)
    state = {k: v.detach().clone() for k, v in exported.model.state_dict().items()}
    hf = type(exported.model)(copy.deepcopy(exported.model.config))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise CheckFailed(f"transformers model does not take mmfw's weights: missing {missing}, unexpected {unexpected}")
    return vlm.eval(), tok, cfg, hf.eval()


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def dataset_items(ws: Workspace, vlm: Any, tok: Any, n: int, max_length: int, path: Path | None = None) -> list[dict]:
    """The first ``n`` tokenized samples (mmfw's LLaVA data path: chat template, image strategy, labels)."""
    from mmfw.config.experiment import DatasetSpec
    from mmfw.data.dataset import LlavaDataset

    ds = LlavaDataset([DatasetSpec(path=str(path or ws.train_json))], tok, vlm.image_strategy, image_token="<image>",
                      max_length=max_length)
    return [ds[i] for i in range(min(n, len(ds)))]


def padded_batch(items: list[dict], pad_id: int, image_token_id: int, padding_side: str = "right") -> dict:
    """Model inputs (:meth:`~mmfw.data.batch.VLMBatch.model_inputs`) and labels of one padded batch (image
    positions masked in the labels)."""
    from mmfw.data.collator import VLMCollator

    batch = VLMCollator(pad_id, padding_side=padding_side)(items)  # type: ignore[arg-type]
    out = batch.model_inputs()
    out["labels"] = batch.labels.masked_fill(batch.input_ids == image_token_id, -100)
    return out
