"""Data a config asks to be generated before training: synthetic visual QA and an offline tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path

from mmfw.config.data import DataConfig
from mmfw.data.synth import ensure_synthetic_vqa
from mmfw.data.tokenizer_train import texts_from_llava_json, train_tokenizer
from mmfw.errors import ConfigError

logger = logging.getLogger(__name__)


def pending_outputs(cfg: DataConfig) -> list[str]:
    """What ``cfg.synthetic`` / ``cfg.build_tokenizer`` declare and is not there yet, as ``"yaml.path: path"``."""
    pending = []
    if cfg.synthetic is not None:
        out = Path(cfg.synthetic.out_dir)
        if not ((out / "train.json").exists() and (out / "eval.json").exists()):
            pending.append(f"data.synthetic: {out}")
    if cfg.build_tokenizer is not None and not (Path(cfg.build_tokenizer.out_dir) / "tokenizer_config.json").exists():
        pending.append(f"data.build_tokenizer: {cfg.build_tokenizer.out_dir}")
    return pending


def prepare_data(cfg: DataConfig) -> None:
    """Generate what ``cfg.synthetic`` / ``cfg.build_tokenizer`` describe, if missing (idempotent)."""
    if cfg.synthetic is not None:
        s = cfg.synthetic
        ensure_synthetic_vqa(s.out_dir, num_train=s.num_train, num_eval=s.num_eval, image_size=s.image_size,
                             seed=s.seed, tasks=s.tasks, extra_train_questions=s.extra_train_questions,
                             train_task_weights=s.train_task_weights, width=s.width, shape_scale=s.shape_scale,
                             max_count=s.max_count)
    if cfg.build_tokenizer is not None:
        out = Path(cfg.build_tokenizer.out_dir)
        if not (out / "tokenizer_config.json").exists():
            if not cfg.train:
                raise ConfigError(["data.build_tokenizer: needs data.train files to learn from"])
            logger.info("training a %d-token tokenizer on %d file(s) -> %s", cfg.build_tokenizer.vocab_size,
                        len(cfg.train), out)
            train_tokenizer(texts_from_llava_json([d.path for d in cfg.train]), out,
                            vocab_size=cfg.build_tokenizer.vocab_size)
