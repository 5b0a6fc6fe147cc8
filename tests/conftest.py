"""Shared fixtures: registries without entry-point plugins, a tiny offline tokenizer, tiny experiment configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mmfw.components import Registries, collect_registries, make_plugin_manager
from mmfw.data.synth import SynthPaths, generate_synthetic_vqa
from mmfw.data.tokenizer_train import texts_from_llava_json, train_tokenizer


@pytest.fixture(scope="session")
def registries() -> Registries:
    """Built-in components only (installed third-party plugins do not leak into unit tests)."""
    return collect_registries(make_plugin_manager(load_entry_points=False))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthPaths:
    return generate_synthetic_vqa(tmp_path_factory.mktemp("synth"), num_train=256, num_eval=32, image_size=32,
                                  seed=0)


@pytest.fixture(scope="session")
def tokenizer_dir(synth_data: SynthPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    texts = list(texts_from_llava_json([synth_data.train])) + ["hello world, a test sentence."]
    train_tokenizer(texts, out, vocab_size=300)
    return out


TINY_MODEL: dict[str, Any] = {
    "vision_encoder": {"type": "clip", "architecture": {
        "image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "projection_dim": 32}},
    "connector": {"type": "mlp", "depth": 2},
    "llm": {"type": "llama", "architecture": {
        "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128}},
    "image_strategy": {"type": "resize"},
}


@pytest.fixture(scope="session")
def tiny_model(tokenizer_dir: Path) -> dict[str, Any]:
    """A tiny CLIP + MLP + Llama model config (a fresh copy per use)."""
    model = copy.deepcopy(TINY_MODEL)
    model["llm"]["tokenizer"] = str(tokenizer_dir)
    return model


@pytest.fixture
def tiny_experiment(tiny_model: dict[str, Any], synth_data: SynthPaths, tmp_path: Path) -> dict[str, Any]:
    """A complete, valid experiment dict training a tiny model on the synthetic data for a few steps."""
    model = copy.deepcopy(tiny_model)
    return {
        "name": "tiny",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "model": model,
        "data": {"train": [{"path": str(synth_data.train)}], "eval": [{"path": str(synth_data.eval)}],
                 "max_length": 96},
        "training": {"max_steps": 4, "batch_size": 8, "learning_rate": 3e-3, "log_every": 2,
                     "policy": {"vision_encoder": "full"}},
    }
