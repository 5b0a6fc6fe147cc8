"""Build a :class:`VisionLanguageModel` from a model config and the registries; save and load its weights."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from transformers import PreTrainedTokenizerBase

from mmfw.components import Registries
from mmfw.config.experiment import ModelConfig
from mmfw.image_strategies.base import VisionGeometry
from mmfw.model.vlm import VisionLanguageModel

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


def load_tokenizer(cfg: ModelConfig, registries: Registries) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with the image placeholder added as one special token."""
    tokenizer = registries.llms.get(cfg.llm.type).load_tokenizer(cfg.llm)
    ensure_image_token(tokenizer, cfg.fusion.image_token)
    return tokenizer


def ensure_image_token(tokenizer: PreTrainedTokenizerBase, image_token: str) -> int:
    """Add ``image_token`` as a special token if it is not a single token yet; return its id."""
    ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != image_token:
        tokenizer.add_tokens([image_token], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(image_token)


def build_model(cfg: ModelConfig, registries: Registries,
                tokenizer: PreTrainedTokenizerBase | None = None) -> tuple[VisionLanguageModel, PreTrainedTokenizerBase]:
    """Instantiate every component and compose them. ``tokenizer`` (e.g. a run's saved one) skips loading."""
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg, registries)
    image_token_id = ensure_image_token(tokenizer, cfg.fusion.image_token)
    vision = registries.vision_encoders.build(cfg.vision_encoder)
    llm = registries.llms.build(cfg.llm, tokenizer=tokenizer)
    connector = registries.connectors.build(cfg.connector, in_dim=vision.embed_dim, out_dim=llm.hidden_size)
    geometry = VisionGeometry(spec=vision.spec, connector_tokens=connector.num_tokens,
                              connector_grid=connector.output_grid)
    strategy = registries.image_strategies.build(cfg.image_strategy, geometry=geometry, hidden_size=llm.hidden_size)
    llm_dtype = next(llm.parameters()).dtype
    connector.to(llm_dtype)
    strategy.to(llm_dtype)
    model = VisionLanguageModel(vision, connector, llm, strategy, fusion=cfg.fusion, image_token_id=image_token_id)
    return model, tokenizer


def save_weights(model: torch.nn.Module, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WEIGHTS_NAME
    save_model(model, str(path))
    return path


def load_weights(model: torch.nn.Module, directory: str | Path, strict: bool = True) -> None:
    """Load safetensors weights; a mismatch names the missing/unexpected keys."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    missing, unexpected = load_model(model, str(path), strict=False)
    if strict and (missing or unexpected):
        raise ValueError(f"checkpoint {path} does not match the model: missing keys {sorted(missing)[:10]}, "
                         f"unexpected keys {sorted(unexpected)[:10]}")
