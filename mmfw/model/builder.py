"""Build a :class:`VisionLanguageModel` from a model config and the registries; save and load its weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from mmfw.components import Registries
from mmfw.config.experiment import ModelConfig
from mmfw.image_strategies.base import VisionGeometry
from mmfw.model.vlm import VisionLanguageModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


def load_tokenizer(cfg: ModelConfig, registries: Registries) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with the fusion's tokens (image placeholder, start/end markers) added as special tokens."""
    tokenizer = registries.llms.get(cfg.llm.type).load_tokenizer(cfg.llm)
    for token in cfg.fusion.added_tokens:
        ensure_image_token(tokenizer, token)
    return tokenizer


def added_token_names(cfg: ModelConfig) -> tuple[str, ...]:
    """The tokens mmfw adds to the LLM's tokenizer (fusion tokens, then ``llm.extra_special_tokens``), each once:
    the embedding rows that ``training.policy.new_token_embeddings`` trains."""
    return tuple(dict.fromkeys((*cfg.fusion.added_tokens, *cfg.llm.added_special_tokens())))


def ensure_image_token(tokenizer: PreTrainedTokenizerBase, image_token: str) -> int:
    """Add ``image_token`` as a special token if it is not a single token yet; return its id."""
    ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != image_token:
        tokenizer.add_tokens([image_token], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(image_token)


def build_model(cfg: ModelConfig, registries: Registries, tokenizer: PreTrainedTokenizerBase | None = None, *,
                without_tokenizer: bool = False) -> tuple[VisionLanguageModel, PreTrainedTokenizerBase]:
    """Instantiate every component and compose them. ``tokenizer`` (e.g. a run's saved one) skips loading.

    ``without_tokenizer=True`` builds a shape-only model with no tokenizer at all (the returned tokenizer is None,
    the LLM vocabulary is its ``architecture.vocab_size``, the image token id is -1): for ``mmfw inspect`` on the
    meta device, where a preset's tokenizer may not be available.
    """
    if tokenizer is None and not without_tokenizer:
        tokenizer = load_tokenizer(cfg, registries)
    token_ids = {t: -1 if tokenizer is None else ensure_image_token(tokenizer, t) for t in added_token_names(cfg)}
    image_token_id = token_ids[cfg.fusion.image_token]
    vision = registries.vision_encoders.build(cfg.vision_encoder)
    llm = registries.llms.build(cfg.llm, tokenizer=tokenizer)
    connector = registries.connectors.build(cfg.connector, in_dim=vision.embed_dim, out_dim=llm.hidden_size)
    geometry = VisionGeometry(spec=vision.spec, connector_tokens=connector.num_tokens,
                              connector_grid=connector.output_grid)
    strategy = registries.image_strategies.build(cfg.image_strategy, geometry=geometry, hidden_size=llm.hidden_size)
    llm_dtype = next(llm.parameters()).dtype
    connector.to(llm_dtype)
    strategy.to(llm_dtype)
    markers = cfg.fusion.image_markers
    model = VisionLanguageModel(vision, connector, llm, strategy, fusion=cfg.fusion, image_token_id=image_token_id,
                                image_marker_ids=None if markers is None else (token_ids[markers[0]],
                                                                               token_ids[markers[1]]),
                                added_token_ids=tuple(token_ids.values()))
    return model, tokenizer


def save_weights(model: torch.nn.Module, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WEIGHTS_NAME
    save_model(model, str(path))
    return path


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model built from its config (names or shapes)."""


def _listing(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_weights(model: torch.nn.Module, directory: str | Path, strict: bool = True) -> None:
    """Load ``model.safetensors`` (never a pickle) into ``model``.

    Raises:
        FileNotFoundError: no weights file in ``directory``.
        CheckpointMismatchError: the file is not valid safetensors, or its tensors do not fit the model: tensors
            whose shapes differ (always an error; each named with both shapes) and, with ``strict``, missing or
            unexpected names.
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointMismatchError(f"checkpoint {path} is not a readable safetensors file: {e}") from None
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k}: checkpoint {list(shapes[k])} vs model {list(model_shapes[k])}"
             for k in sorted(shapes.keys() & model_shapes.keys()) if shapes[k] != model_shapes[k]]
    if wrong:
        raise CheckpointMismatchError(f"checkpoint {path} does not match the model built from the config: "
                                      f"{len(wrong)} tensor(s) differ in shape: {_listing(wrong)}")
    missing, unexpected = load_model(model, str(path), strict=False)
    if strict and (missing or unexpected):
        problems = []
        if missing:
            problems.append(f"missing from the checkpoint: {_listing(sorted(missing))}")
        if unexpected:
            problems.append(f"not in the model: {_listing(sorted(unexpected))}")
        raise CheckpointMismatchError(f"checkpoint {path} does not match the model built from the config: "
                                      + "; ".join(problems))
