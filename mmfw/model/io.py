"""Model directories: ``config.yaml`` (resolved experiment config) + ``model.safetensors`` + the tokenizer.

A run directory keeps its final model in ``RUN_DIR/model``; checkpoints under ``RUN_DIR/checkpoints/step-N`` have
the same layout, so either can be loaded with :func:`load_model_dir`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mmfw.components import Registries, default_registries
from mmfw.config import ExperimentConfig, load_config, save_config
from mmfw.config.loader import RESOLVED_CONFIG_NAME
from mmfw.model.adapters import ADAPTERS_DIR, load_adapters
from mmfw.model.builder import WEIGHTS_NAME, build_model, load_weights, save_weights
from mmfw.model.vlm import VisionLanguageModel

FINAL_MODEL_DIR = "model"


def resolve_model_dir(path: str | Path) -> Path:
    """``path`` itself if it holds weights, else its ``model`` sub-directory (a run directory)."""
    path = Path(path)
    if (path / WEIGHTS_NAME).exists():
        return path
    if (path / FINAL_MODEL_DIR / WEIGHTS_NAME).exists():
        return path / FINAL_MODEL_DIR
    raise FileNotFoundError(f"{path} is neither a model directory nor a run directory with a finished model "
                            f"(no {WEIGHTS_NAME} in it or in {FINAL_MODEL_DIR}/)")


def save_model_dir(model: VisionLanguageModel, tokenizer: PreTrainedTokenizerBase, cfg: ExperimentConfig,
                   directory: str | Path) -> Path:
    directory = Path(directory)
    save_weights(model, directory)
    tokenizer.save_pretrained(directory / "tokenizer")
    save_config(cfg, directory / RESOLVED_CONFIG_NAME)
    return directory


def load_model_dir(path: str | Path, registries: Registries | None = None, device: str | torch.device = "cpu",
                   ) -> tuple[VisionLanguageModel, PreTrainedTokenizerBase, ExperimentConfig]:
    """Rebuild the model of a model/run directory and load its weights (safetensors only)."""
    registries = registries or default_registries()
    directory = resolve_model_dir(path)
    cfg = load_config(directory / RESOLVED_CONFIG_NAME, registries)
    tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
    model, tokenizer = build_model(cfg.model, registries, tokenizer=tokenizer)
    load_weights(model, directory)
    if (directory / ADAPTERS_DIR).is_dir():  # a LoRA-trained model: fold the peft adapters into the weights
        load_adapters(model, directory, merge=True)
    return model.to(device).eval(), tokenizer, cfg
