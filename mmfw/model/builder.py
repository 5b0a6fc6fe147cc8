"""Build a :class:`VisionLanguageModel` (or only its image path) from a model config and the registries; save and
load its weights.

Components raise errors about their own fields; the builder knows where each component sits in the YAML and puts
that path in front (``model.image_strategy.grid_pinpoints[0]: ...``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from mmfw.config.experiment import ModelConfig
from mmfw.errors import CheckpointMismatchError, ConfigError, MMFWError
from mmfw.model.vlm import VisionLanguageModel
from mmfw.specs import LLMGeometry, VisionGeometry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from mmfw.config.kinds import Registries
    from mmfw.connectors.base import Connector
    from mmfw.encoders.base import VisionEncoder
    from mmfw.image_strategies.base import ImageStrategy

logger = logging.getLogger(__name__)

T = TypeVar("T")

WEIGHTS_NAME = "model.safetensors"


def load_tokenizer(cfg: ModelConfig, registries: Registries) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with the fusion's tokens (image placeholder, start/end markers) added as special tokens."""
    tokenizer = located("llm", lambda: registries.llms.get(cfg.llm.type).load_tokenizer(cfg.llm))
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


def located(key: str, make: Callable[[], T]) -> T:
    """``make()``, with the errors a component raises about its config located under ``model.<key>``: a
    :class:`ConfigError` (relative to the component's fields) and a plain ``ValueError`` (the component rejects its
    config or its dependencies, e.g. widths that do not fit) become one :class:`ConfigError`; other mmfw errors pass
    through."""
    where = f"model.{key}"
    try:
        return make()
    except ConfigError as e:
        raise e.at(where) from e
    except MMFWError:  # already says what it is (e.g. TokenizerRequiredError)
        raise
    except ValueError as e:
        msg = str(e)
        raise ConfigError([msg if msg.startswith(f"{where}.") else f"{where}: {msg}"]) from e


def build_component(registries: Registries, key: str, cfg: Any, /, **deps: Any) -> Any:
    """The component of kind ``key`` selected by ``cfg``, its config errors located (see :func:`located`)."""
    return located(key, lambda: registries.of(key).build(cfg, **deps))


def vision_geometry(vision: VisionEncoder, connector: Connector) -> VisionGeometry:
    """How a tile becomes tokens with this encoder and connector (what the image strategy is built from)."""
    return VisionGeometry(spec=vision.spec, connector_tokens=connector.num_tokens,
                          connector_grid=connector.output_grid)


def llm_geometry(cfg: ModelConfig, registries: Registries) -> LLMGeometry | None:
    """The LLM's hidden size and maximum sequence length from its config (see :meth:`LanguageModel.geometry`)."""
    return registries.llms.get(cfg.llm.type).geometry(cfg.llm)


def build_image_strategy(cfg: ModelConfig, registries: Registries, device: str | torch.device = "cpu",
                         ) -> ImageStrategy:
    """The image strategy of ``cfg`` on ``device`` without building the LLM. The vision encoder and connector are
    built on the meta device to learn the geometry (for real when the encoder loads weights)."""
    llm = llm_geometry(cfg, registries)
    if llm is None:
        raise ConfigError(["model.llm: cannot determine the LLM's hidden size without loading it; is "
                           "model.llm.pretrained available locally?"])
    with torch.device("cpu" if cfg.vision_encoder.loads_weights else "meta"):
        vision = build_component(registries, "vision_encoder", cfg.vision_encoder)
        connector = build_component(registries, "connector", cfg.connector, in_dim=vision.embed_dim,
                                    out_dim=llm.hidden_size)
    with torch.device(device):
        return build_component(registries, "image_strategy", cfg.image_strategy,
                               geometry=vision_geometry(vision, connector), hidden_size=llm.hidden_size)


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
    vision = build_component(registries, "vision_encoder", cfg.vision_encoder)
    llm = build_component(registries, "llm", cfg.llm, tokenizer=tokenizer)
    connector = build_component(registries, "connector", cfg.connector, in_dim=vision.embed_dim,
                                out_dim=llm.hidden_size)
    strategy = build_component(registries, "image_strategy", cfg.image_strategy,
                               geometry=vision_geometry(vision, connector), hidden_size=llm.hidden_size)
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
