"""``mmfw inspect``: meta-device build, per-module and per-stage counts, image tokens from the strategy, memory."""

from __future__ import annotations

import copy
import json

import torch
import yaml
from PIL import Image

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.inspection import format_report, inspect_config, memory_estimate
from mmfw.model.builder import build_model


def test_counts_equal_the_real_model(tiny_experiment, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["image_strategy"] = {"type": "anyres"}
    exp["training"]["policy"] = {"vision_encoder": "frozen", "llm": {"type": "frozen"}}
    cfg = load_config_dict(exp, registries)
    r = inspect_config(cfg, registries, image_size=(100, 30))

    real, _ = build_model(cfg.model, registries)  # on the CPU, with the tokenizer
    modules = {"vision": real.vision_encoder, "connector": real.connector, "llm": real.llm,
               "image_strategy": real.image_strategy}
    assert r["params"]["by_module"] == {k: sum(p.numel() for p in m.parameters()) for k, m in modules.items()}
    assert r["params"]["total"] == sum(p.numel() for p in real.parameters())
    assert r["params"]["trainable"] == r["params"]["by_module"]["connector"] + r["params"]["by_module"]["image_strategy"]
    assert r["dims"]["vocab_from"] == "tokenizer"
    blocks = {type(b).__name__ for b in real.vision_encoder.layer_groups()} | {
        type(m).__name__ for m in real.llm.modules() if type(m).__name__ in real.llm.model._no_split_modules}
    assert r["fsdp_wrap"] == sorted(blocks) == ["CLIPEncoderLayer", "LlamaDecoderLayer"]
    assert r["dims"]["vocab_size"] == real.llm.get_input_embeddings().num_embeddings
    size = (100, 30)
    pixels = real.image_strategy.preprocess(Image.new("RGB", size)).pixel_values
    assert r["image_tokens"] == real.image_strategy.num_tokens(size) and r["image_input"] == list(pixels.shape)


def test_no_tokenizer_is_loaded_when_the_vocab_size_is_given(tiny_experiment, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["llm"]["tokenizer"] = "no/such-tokenizer"  # never loaded: the vocabulary is given
    exp["model"]["llm"]["architecture"]["vocab_size"] = 1000
    r = inspect_config(load_config_dict(exp, registries), registries)
    assert r["dims"] == r["dims"] | {"vocab_size": 1000, "vocab_from": "architecture"}
    assert r["image_size"] == [32, 32] and r["image_tokens"] == 16


def test_stages_and_memory(tiny_experiment, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["training"]["policy"] = {"vision_encoder": "frozen"}
    exp["stages"] = [{"name": "align", "policy": {"llm": "frozen"}}, {"name": "tune"}]
    r = inspect_config(load_config_dict(exp, registries), registries)
    by = r["params"]["by_module"]
    assert [s["trainable"] for s in r["stages"]] == [by["connector"], by["connector"] + by["llm"]]
    assert r["params"]["trainable"] == r["stages"][1]["trainable"]
    assert r["memory_bytes"] == memory_estimate(r["params"]["total"], r["params"]["trainable"])
    assert memory_estimate(10, 4) == {
        "fp32": {"weights": 40, "gradients": 16, "optimizer": 32, "total": 88},
        "bf16": {"weights": 20, "gradients": 8, "optimizer": 32, "total": 60}}
    text = format_report(r)
    assert "trainable per stage: align" in text and "AdamW" in text


def test_cli(tiny_experiment, tmp_path, capsys) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment))  # its data files need not exist for inspect
    assert main(["-q", "inspect", str(path), "--json", "--image-size", "64x32", "--set",
                 "model.image_strategy.type=pad"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["components"]["image_strategy"] == "pad" and out["image_tokens"] == 16
    assert out["params"]["total"] == sum(out["params"]["by_module"].values())
    assert main(["-q", "inspect", str(path)]) == 0
    assert "image 32x32: 16 tokens" in capsys.readouterr().out
    assert torch.get_default_device() == torch.device("cpu")  # the meta device does not leak
