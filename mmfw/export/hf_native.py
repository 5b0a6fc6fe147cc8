"""Export any composition to transformers: ``--format hf`` (mmfw's own classes) and ``--format auto``.

``hf`` writes a directory that transformers' Auto classes load wherever mmfw is installed: ``config.json``
(:class:`~mmfw.hf.MMFWConfig`, ``model_type: "mmfw"``, holding mmfw's resolved model config), ``model.safetensors``
(the mmfw model's own parameter names under ``vlm.``), ``generation_config.json``, the tokenizer with its chat
template, and the processor (:class:`~mmfw.hf.MMFWProcessor` wrapping the run's image strategy). It works for every
composition because the model is mmfw's own, rebuilt from its config through the registries.

``auto`` asks the components for their transformers Llava mapping (``hf_llava_export``) and writes the native
``hf-llava`` / ``hf-llava-next`` checkpoint when they all have one and agree on a format, else ``hf``.

Every format refuses a target directory that exists and is not empty, unless ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfw.errors import ExportError
from mmfw.interop import FORMATS as LLAVA_FORMATS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from mmfw.components import Registries
    from mmfw.config import ExperimentConfig
    from mmfw.hf import MMFWForConditionalGeneration, MMFWProcessor
    from mmfw.model.vlm import VisionLanguageModel

logger = logging.getLogger(__name__)

FORMATS = ("auto", "hf", *LLAVA_FORMATS)

SHIMS = {  # auto_map modules next to config.json: with trust_remote_code on, no `import mmfw.hf` is needed
    "configuration_mmfw.py": "from mmfw.hf import MMFWConfig  # noqa: F401\n",
    "modeling_mmfw.py": "from mmfw.hf import MMFWForConditionalGeneration  # noqa: F401\n",
    "processing_mmfw.py": "from mmfw.hf import MMFWImageProcessor, MMFWProcessor  # noqa: F401\n",
}
AUTO_MAP = {"AutoConfig": "configuration_mmfw.MMFWConfig",
            "AutoModelForImageTextToText": "modeling_mmfw.MMFWForConditionalGeneration"}


class ExportTargetExistsError(ExportError):
    """The export target is a non-empty directory and overwriting was not asked for."""


def check_target(out: str | Path, overwrite: bool) -> Path:
    """``out`` ready to be written: a missing or empty directory, or (``overwrite``) one whose contents go."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportTargetExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportTargetExistsError(f"{out} is not empty; choose a new directory or pass --overwrite")
        shutil.rmtree(out)
    return out


def standalone_model_config(model: VisionLanguageModel, cfg: ExperimentConfig) -> dict[str, Any]:
    """The run's model config as a dict that rebuilds the same modules without a tokenizer or a download: every
    component's config as it says with :meth:`export_config` (architecture instead of pretrained weights), and the
    LLM's vocabulary size written out."""
    out = {key: component.export_config().model_dump(mode="json") for key, component in model.components().items()}
    out["fusion"] = cfg.model.fusion.model_dump(mode="json")
    return out


def build_hf(model: VisionLanguageModel, tokenizer: PreTrainedTokenizerBase, cfg: ExperimentConfig,
             ) -> tuple[MMFWForConditionalGeneration, MMFWProcessor]:
    """The transformers model (sharing ``model``'s tensors) and processor of ``model``."""
    from mmfw.hf import MMFWConfig, MMFWForConditionalGeneration, MMFWImageProcessor, MMFWProcessor

    llm = model.llm.model
    mmfw_model = standalone_model_config(model, cfg)
    config = MMFWConfig(mmfw_model=mmfw_model, text_config=llm.config.to_dict(),
                        system_prompt=cfg.data.system_prompt, image_token=cfg.model.fusion.image_token,
                        image_token_id=model.image_token_id,
                        tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
                        architectures=[MMFWForConditionalGeneration.__name__])
    config.auto_map = dict(AUTO_MAP)
    hf = MMFWForConditionalGeneration(config, vlm=model).eval()
    hf.generation_config = llm.generation_config
    processor = MMFWProcessor(image_processor=MMFWImageProcessor(mmfw_model=mmfw_model), tokenizer=tokenizer,
                              chat_template=getattr(tokenizer, "chat_template", None),
                              image_token=cfg.model.fusion.image_token, system_prompt=cfg.data.system_prompt)
    return hf, processor


def save_hf(model: VisionLanguageModel, tokenizer: PreTrainedTokenizerBase, cfg: ExperimentConfig,
            out: str | Path) -> Path:
    out = Path(out)
    hf, processor = build_hf(model, tokenizer, cfg)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    processor.save_pretrained(out)
    for name, text in SHIMS.items():
        (out / name).write_text(text)
    processor_config = out / "processor_config.json"
    data = json.loads(processor_config.read_text())
    data["auto_map"] = {"AutoProcessor": "processing_mmfw.MMFWProcessor"}
    processor_config.write_text(json.dumps(data, indent=2) + "\n")
    return out


def choose_format(model: VisionLanguageModel) -> str:
    """``hf-llava`` / ``hf-llava-next`` when every component maps onto transformers' Llava classes and they agree
    on a format, else ``hf``."""
    from mmfw.export.hf_llava import _choose_format, collect_parts

    try:
        return _choose_format(collect_parts(model), None)
    except ExportError as err:
        logger.info("no native transformers Llava format fits (%s); exporting as 'hf'", err)
        return "hf"


def export(model_dir: str | Path, out: str | Path, fmt: str = "auto", overwrite: bool = False,
           registries: Registries | None = None) -> tuple[Path, str]:
    """Load the run or model directory ``model_dir`` and write it to ``out`` in ``fmt`` (one of :data:`FORMATS`).

    Returns ``(out, format written)``.
    """
    from mmfw.export.hf_llava import build_hf_llava
    from mmfw.model.io import load_model_dir

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = check_target(out, overwrite)
    model, tokenizer, cfg = load_model_dir(model_dir, registries)
    if fmt == "auto":
        fmt = choose_format(model)
    if fmt == "hf":
        save_hf(model, tokenizer, cfg, out)
    else:
        build_hf_llava(model, tokenizer, fmt).save(out)
    logger.info("exported %s as %s to %s", model_dir, fmt, out)
    return out, fmt
