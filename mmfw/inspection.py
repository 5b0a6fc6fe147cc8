"""Dry-run facts about an experiment config, before any compute: parameters, image tokens, memory.

:func:`inspect_config` builds the whole model on PyTorch's meta device (shapes only: no weights are allocated or
downloaded, so a 12B model costs nothing) and without a tokenizer (the LLM's vocabulary is its
``architecture.vocab_size``; if the LLM's config has none, its local tokenizer is loaded to size the vocabulary),
then reports

* parameters per module, in total (the model as built, without adapters) and trainable under each stage's
  ``training.policy`` (:func:`~mmfw.training.policy.trainable_parameter_counts`, the trainer's own policy logic;
  LoRA adapter parameters count as trainable). ``params.trainable`` is the stage that trains the most (the only
  one without ``stages``), which also sets the memory estimate;
* the image tokens and input tiles of an image of a given size, from the image strategy itself (the single source of
  truth the data pipeline uses; ``model.fusion``'s start/end markers included), and the most tokens any image can
  become;
* a memory estimate for weights, gradients and AdamW state (two fp32 moments per trainable parameter; with
  ``policy.new_token_embeddings``, for the whole embedding weights, whose other rows are masked), for fp32 and
  bf16 weights/gradients. Activations are not included;
* the block classes FSDP should wrap (:meth:`VisionLanguageModel.fsdp_block_classes`), the value of Accelerate's
  ``fsdp_transformer_layer_cls_to_wrap``.

Components must be buildable from an ``architecture`` (random init); a ``pretrained`` component would be loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from mmfw.config import ExperimentConfig
from mmfw.config.kinds import KINDS, Registries
from mmfw.errors import TokenizerRequiredError
from mmfw.model.builder import build_model
from mmfw.training.new_token_rows import embedding_weights, new_token_row_count
from mmfw.training.policy import trainable_parameter_counts

MODULES = {k.report_name: k.key for k in KINDS}
"""Report names of the VLM's top-level modules (one per component kind)."""
BYTES = {"fp32": 4, "bf16": 2}
ADAMW_STATE_BYTES = 8
"""Two fp32 moments per trainable parameter."""


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


def memory_estimate(total: int, trainable: int) -> dict[str, dict[str, int]]:
    """Bytes of weights, gradients and AdamW state for each weight dtype (optimizer state is fp32 in both)."""
    out = {}
    for dtype, size in BYTES.items():
        parts = {"weights": total * size, "gradients": trainable * size, "optimizer": trainable * ADAMW_STATE_BYTES}
        out[dtype] = parts | {"total": sum(parts.values())}
    return out


def inspect_config(cfg: ExperimentConfig, registries: Registries,
                   image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Facts about ``cfg``'s model (see module docstring); ``image_size`` is (width, height), default the encoder's
    native size. The result is JSON-serialisable."""
    with torch.device("meta"):
        try:
            model, _ = build_model(cfg.model, registries, without_tokenizer=True)
            vocab_from = "architecture"
        except TokenizerRequiredError:  # no vocab_size in the config: the (local) tokenizer gives it
            model, _ = build_model(cfg.model, registries)
            vocab_from = "tokenizer"
    components = model.components()
    by_module = {name: _count(components[key].parameters()) for name, key in MODULES.items()}
    total = _count(model.parameters())
    stages = []
    for stage in cfg.stage_plan():
        counts = trainable_parameter_counts(model, stage.training.policy)
        # new-token rows train through a gradient mask: gradients and AdamW state cover the whole embedding weights
        masked = (sum(w.numel() for w in embedding_weights(model)) - new_token_row_count(model)
                  if stage.training.policy.new_token_embeddings else 0)
        stages.append({"name": stage.name, "trainable": counts["total"],
                       "trainable_by_module": {name: counts[attr] for name, attr in MODULES.items()},
                       "memory_bytes": memory_estimate(total, counts["total"] + masked)})
    peak = max(stages, key=lambda s: s["trainable"])

    spec = model.vision_encoder.spec
    width, height = image_size or (spec.image_size[1], spec.image_size[0])
    strategy = model.image_strategy
    pixels = strategy.preprocess(Image.new("RGB", (width, height))).pixel_values
    return {
        "name": cfg.name,
        "components": {name: cfg.model.components()[key].type for name, key in MODULES.items()},
        "params": {"total": total, "trainable": peak["trainable"], "by_module": by_module,
                   "trainable_by_module": peak["trainable_by_module"]},
        "stages": stages,
        "dims": {"vision_embed_dim": spec.embed_dim, "vision_input": list(spec.image_size),
                 "patch_size": spec.patch_size, "llm_hidden_size": model.llm.hidden_size,
                 "vocab_size": model.llm.get_input_embeddings().num_embeddings, "vocab_from": vocab_from},
        "image_size": [width, height],
        "image_tokens": cfg.model.fusion.image_sequence_length(strategy.num_tokens((width, height))),
        "image_tokens_max": cfg.model.fusion.image_sequence_length(strategy.max_tokens()),
        "image_input": list(pixels.shape),
        "memory_bytes": peak["memory_bytes"],
        "fsdp_wrap": sorted(cls.__name__ for cls in model.fsdp_block_classes()),
    }


def _params(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, div in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def format_report(report: dict[str, Any]) -> str:
    """A human-readable summary of :func:`inspect_config`'s result."""
    p = report["params"]
    lines = [f"{report['name']}: " + " + ".join(f"{v}" for v in report["components"].values()),
             f"{'module':<16}{'parameters':>16}{'trainable':>16}"]
    for name, n in p["by_module"].items():
        lines.append(f"{name:<16}{n:>16,}{p['trainable_by_module'][name]:>16,}")
    lines.append(f"{'total':<16}{p['total']:>16,}{p['trainable']:>16,}   ({_params(p['total'])} / "
                 f"{_params(p['trainable'])})")
    if len(report["stages"]) > 1:
        lines.append("trainable per stage: " + ", ".join(f"{s['name']} {_params(s['trainable'])}"
                                                          for s in report["stages"]))
    w, h = report["image_size"]
    tiles = report["image_input"]
    lines.append(f"image {w}x{h}: {report['image_tokens']} tokens from {tiles[0]} tile(s) of {tiles[2]}x{tiles[3]} "
                 f"(any image: at most {report['image_tokens_max']})")
    lines.append("memory of the stage training the most (weights + gradients + AdamW state, no activations):")
    for dtype, m in report["memory_bytes"].items():
        lines.append(f"  {dtype}: weights {_bytes(m['weights'])}, gradients {_bytes(m['gradients'])}, "
                     f"AdamW {_bytes(m['optimizer'])}, total {_bytes(m['total'])}")
    if report["fsdp_wrap"]:
        lines.append(f"FSDP blocks (fsdp_transformer_layer_cls_to_wrap): {','.join(report['fsdp_wrap'])}")
    return "\n".join(lines)
