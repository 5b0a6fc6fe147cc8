"""Checks of what a config points at on disk (and in the hub cache), run with the others of
:mod:`mmfw.config.validate` before anything is built.

* ``output_dir`` is a directory, or can become one (no file in the way);
* a local ``tokenizer`` is a directory holding a tokenizer; a local ``pretrained`` is a directory holding a
  transformers ``config.json`` and safetensors weights (a directory with only pickle checkpoints is refused: mmfw
  never unpickles), and a config that needs remote code (``auto_map``) says how to allow it;
* a hub id that is not in the local cache is named when the hub is offline (``HF_HUB_OFFLINE=1``), cannot be
  reached (one request with huggingface_hub's ``HF_HUB_ETAG_TIMEOUT``, no retries: a machine without network learns
  it in seconds, not after the download's retry loop) or has no such repository;
* the LLM's ``architecture`` is one its transformers config class accepts (``architecture.extra`` keys), and one
  image becomes at least one token.

Each check takes the :class:`~mmfw.config.validate.ValidationContext` and yields ``"yaml.path: message"`` lines.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mmfw.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_output_dir(ctx: Any) -> Iterator[str]:
    """``output_dir`` is not a file and no file lies on the way to it."""
    out = Path(ctx.cfg.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        yield f"output_dir: {out} is a file, not a directory; choose another output_dir"
        return
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                yield f"output_dir: {out} cannot be created: {parent} is a file, not a directory"
            break


def pretrained_dir_problem(path: Path, trust_remote_code: bool) -> str | None:
    """Why a local ``pretrained`` directory cannot be loaded safely, or None."""
    if not path.is_dir():
        return f"{path} is a file; name a model directory (with config.json and *.safetensors) or a hub id"
    config = path / "config.json"
    if not config.is_file():
        return f"{path} has no config.json: not a transformers model directory"
    try:
        hf = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{config} cannot be read as JSON: {e}"
    if isinstance(hf, dict) and hf.get("auto_map") and not trust_remote_code:
        return (f"{path} needs remote code (its config.json has auto_map {sorted(hf['auto_map'])}); review that code "
                "and set trust_remote_code: true in this component to allow it")
    files = [p for p in path.iterdir() if p.is_file()]
    if not any(p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json") for p in files):
        pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            return (f"{path} holds only pickle checkpoints ({', '.join(pickles[:3])}); mmfw does not unpickle "
                    "weights: convert them to safetensors (e.g. save_pretrained(..., safe_serialization=True) on a "
                    "trusted machine)")
        return f"{path} has no *.safetensors weights"
    return None


def tokenizer_dir_problem(path: Path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a directory (a tokenizer is a directory with tokenizer.json or tokenizer_config.json)"
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        return f"{path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:2])}, ...)"
    return None


def _hub_cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return True
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "open_clip_config.json"):
        try:
            found = try_to_load_from_cache(repo, name)
        except Exception:  # an id the hub library refuses: checked elsewhere
            return True
        if isinstance(found, str):
            return True
    return False


def hub_problem(repo: str, ask_hub: bool = True) -> str | None:
    """Why the uncached hub id ``repo`` cannot be downloaded now, or None (online and the repository exists, or the
    hub refuses only for a reason the download reports better, e.g. a gated repository)."""
    not_cached = f"{repo!r} is not in the local Hugging Face cache"
    how = (f"download it first (hf download {repo}, on a machine with network, into HF_HOME) or name a local "
           "directory")
    if hub_offline():
        return f"{not_cached} and the hub is offline (HF_HUB_OFFLINE=1); {how}"
    if not ask_hub:  # a command that reads only the config (mmfw inspect)
        return None
    try:
        from huggingface_hub import constants, model_info
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        model_info(repo, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except RepositoryNotFoundError:
        return (f"{not_cached} and the hub ({constants.ENDPOINT}) has no such repository (or it is private: log in "
                f"with hf auth login); check the id or {how}")
    except HfHubHTTPError as e:  # gated, rate-limited...: the download says why
        logger.debug("the hub answered for %s: %s", repo, e)
        return None
    except Exception as e:  # noqa: BLE001 - no network: DNS, connection refused, timeout, offline mode
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{not_cached} and the hub ({constants.ENDPOINT}) cannot be reached ({first}); {how}"
    return None


def check_local_sources(ctx: Any, ask_hub: bool = True) -> Iterator[str]:
    """Local ``pretrained`` / ``tokenizer`` directories (:meth:`ComponentConfig.sources`) hold what they must; hub
    ids are cached or can be downloaded now (:func:`hub_problem`, asked once per id)."""
    from mmfw.config.validate import _is_hub_id

    hub: dict[str, str | None] = {}
    for comp, cfg in ctx.cfg.model.components().items():
        trust = cfg.runs_remote_code
        for key, value in cfg.sources().items():
            if not isinstance(value, str) or ctx.is_generated(value):
                continue
            where = f"model.{comp}.{key}"
            path = Path(value).expanduser()
            if path.exists():
                if key == "tokenizer":
                    problem = tokenizer_dir_problem(path)
                elif comp == "llm":
                    problem = pretrained_dir_problem(path, trust)
                else:
                    problem = None if path.is_dir() else f"{path} is a file, not a model directory"
                if problem:
                    yield f"{where}: {problem}"
            elif _is_hub_id(value) and not _hub_cached(value):
                if value not in hub:
                    hub[value] = hub_problem(value, ask_hub)
                if hub[value]:
                    yield f"{where}: {hub[value]}"


def check_llm_architecture(ctx: Any) -> Iterator[str]:
    """The LLM's architecture is accepted by its transformers config class (unknown ``extra`` keys...)."""
    llm = ctx.cfg.model.llm
    yield from ctx.registries.llms.get(llm.type).config_problems(llm)


def check_image_tokens(ctx: Any) -> Iterator[str]:
    """One image of the encoder's own size becomes at least one token."""
    strategy = ctx.image_strategy
    if strategy is None:
        return
    h, w = strategy.geometry.spec.image_size
    try:
        n = int(strategy.num_tokens((w, h)))
    except Exception as e:  # reported by the token-budget check
        logger.debug("cannot count the image tokens: %s", e)
        return
    if n < 1:
        patch = strategy.geometry.spec.patch_size
        detail = f" (patch_size {patch} is larger than the image)" if patch > min(h, w) else ""
        yield (f"model.vision_encoder: one {w}x{h} image becomes 0 tokens{detail}; every image needs at least one "
               "token")


def load_located(where: str, source: str, load: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``load(*args, **kwargs)`` (a ``from_pretrained``) with the errors a missing, unreachable, unsafe or
    remote-code source raises turned into a one-line :class:`ConfigError` at ``where`` (``model.llm.pretrained``)."""
    try:
        return load(*args, **kwargs)
    except ConfigError:
        raise
    except (OSError, ValueError, ImportError, pickle.UnpicklingError) as e:
        path = Path(source).expanduser()
        problem = None
        if path.is_dir():
            problem = (tokenizer_dir_problem(path) if where.endswith(".tokenizer")
                       else pretrained_dir_problem(path, bool(kwargs.get("trust_remote_code"))))
        if problem is None:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            offline = " (the hub is offline: HF_HUB_OFFLINE=1)" if hub_offline() else ""
            problem = f"cannot load {source!r}{offline}: {first}"
        raise ConfigError([f"{where}: {problem}"]) from e


INPUT_CHECKS = (check_output_dir, check_local_sources, check_llm_architecture, check_image_tokens)
