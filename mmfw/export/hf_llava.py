"""Export to transformers' own ``LlavaForConditionalGeneration`` / ``LlavaNextForConditionalGeneration``.

The exporter knows no component by name. Each component that has a transformers counterpart implements
``hf_llava_export(self) -> HFLlavaPart``: its share of the transformers config, its weights under transformers'
parameter names, and (image strategies) the transformers image processor that prepares pixels exactly as the
strategy does and the formats the strategy can be expressed in. A component without the method, or one whose
settings have no counterpart (it raises :class:`ExportError`), cannot be exported, and the error names it.

The output directory holds the model (``save_pretrained``) and its processor (tokenizer with chat template + image
processor), so ``AutoProcessor.from_pretrained(out)`` and ``AutoModelForImageTextToText.from_pretrained(out)``
reproduce the mmfw model's inputs and logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfw.config.kinds import KIND
from mmfw.errors import ExportError
from mmfw.interop import FORMATS, HFLlavaPart, image_processor_kwargs, prefixed  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

    from mmfw.components import Registries
    from mmfw.model.vlm import VisionLanguageModel

logger = logging.getLogger(__name__)

def _classes(fmt: str) -> tuple[type, type, type]:
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    if fmt == "hf-llava":
        return LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    return LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor


def _describe(key: str, module: torch.nn.Module) -> str:
    cls = type(module)
    return f"{KIND[key].label} {module.cfg.type!r} ({cls.__module__}.{cls.__qualname__})"


def collect_parts(model: VisionLanguageModel) -> dict[str, HFLlavaPart]:
    """Every component's :class:`HFLlavaPart`; :class:`ExportError` naming each component without a mapping."""
    parts, problems = {}, []
    for key, module in model.components().items():
        try:
            part = module.hf_llava_export()
        except ExportError as err:
            problems.append(f"{_describe(key, module)}: {err}")
            continue
        if part is None:
            problems.append(f"{_describe(key, module)} has no transformers Llava mapping "
                            "(it does not implement hf_llava_export)")
        else:
            parts[key] = part
    if problems:
        raise ExportError("cannot export to transformers Llava: " + "; ".join(problems))
    return parts


def _choose_format(parts: dict[str, HFLlavaPart], fmt: str | None) -> str:
    allowed = [f for f in FORMATS if all(f in p.formats for p in parts.values())]
    if fmt is None:
        if not allowed:
            raise ExportError("the components agree on no export format: "
                              + ", ".join(f"{k} -> {list(p.formats)}" for k, p in parts.items()))
        return allowed[0]
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt not in allowed:
        narrow = [k for k, p in parts.items() if fmt not in p.formats]
        raise ExportError(f"format {fmt!r} does not fit this model: " + ", ".join(
            f"its {k} exports to {list(parts[k].formats)}" for k in narrow))
    return fmt


def _merge(parts: dict[str, HFLlavaPart], attr: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, part in parts.items():
        for key, value in getattr(part, attr).items():
            if key in out and out[key] != value:
                raise ExportError(f"components disagree on {attr} {key!r}: {out[key]!r} vs {value!r} ({kind})")
            out[key] = value
    return out


@dataclass
class HFLlavaExport:
    """A transformers model (weights assigned, for ``save_pretrained``) and processor equivalent to an mmfw model."""

    model: PreTrainedModel
    processor: ProcessorMixin
    format: str

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.processor.save_pretrained(out)
        return out


def build_hf_llava(model: VisionLanguageModel, tokenizer: PreTrainedTokenizerBase, fmt: str | None = None,
                   ) -> HFLlavaExport:
    """The transformers model and processor equivalent to ``model`` in format ``fmt`` (default: the one its image
    strategy maps to).

    The model is created on the meta device and takes mmfw's tensors without copying; its non-persistent buffers
    stay on meta, so reload the saved directory to run it.
    """
    import torch

    if model.image_marker_ids is not None:
        fusion = model.fusion
        raise ExportError(f"model.fusion.image_start_token {fusion.image_start_token!r} / image_end_token "
                          f"{fusion.image_end_token!r}: transformers' Llava processors expand only the image token "
                          "and cannot write start/end tokens around each image, so the exported model would see its "
                          "images without them; export a model trained without them")
    parts = collect_parts(model)
    fmt = _choose_format(parts, fmt)
    config_cls, model_cls, processor_cls = _classes(fmt)
    kwargs = _merge(parts, "config")
    kwargs["image_token_id"] = model.image_token_id
    text = kwargs.get("text_config") or {}
    kwargs.setdefault("tie_word_embeddings", bool(text.get("tie_word_embeddings", False)))
    config = config_cls(**kwargs)
    weights = {k: v for p in parts.values() for k, v in p.weights.items()}
    with torch.device("meta"):
        hf = model_cls(config)
    expected = set(hf.state_dict())
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ExportError(f"the components' weights do not fit {model_cls.__name__}: missing {missing[:8]}, "
                          f"unexpected {unexpected[:8]}")
    hf.load_state_dict(weights, strict=False, assign=True)
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.eval()
    strategy = parts["image_strategy"]
    if strategy.image_processor is None:
        raise ExportError(f"{_describe('image_strategy', model.image_strategy)} gives no transformers image processor")
    processor = processor_cls(image_processor=strategy.image_processor, tokenizer=tokenizer,
                              chat_template=getattr(tokenizer, "chat_template", None),
                              image_token=model.fusion.image_token, **_merge(parts, "processor"))
    return HFLlavaExport(model=hf, processor=processor, format=fmt)


def export_hf_llava(model_dir: str | Path, out: str | Path, fmt: str | None = None,
                    registries: Registries | None = None) -> tuple[Path, str]:
    """Load the model or run directory ``model_dir`` and write the transformers checkpoint + processor to ``out``.

    Returns ``(out, format)``; ``fmt=None`` picks the format the image strategy maps to.
    """
    from mmfw.model.io import load_model_dir

    model, tokenizer, _ = load_model_dir(model_dir, registries)
    exported = build_hf_llava(model, tokenizer, fmt)
    out = exported.save(out)
    logger.info("exported %s (%s) to %s", type(exported.model).__name__, exported.format, out)
    return out, exported.format
