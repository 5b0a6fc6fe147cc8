"""Every registered component, composed with the kit's partners into a whole model, exports with ``--format hf``:
transformers' Auto classes load it and ``generate`` gives mmfw's own greedy tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import mmfw.hf  # noqa: F401  (registers model_type "mmfw" with the Auto classes)
from mmfw.config import load_config_dict
from mmfw.export.hf_native import save_hf
from mmfw.inference import VLMPipeline
from mmfw.model.builder import build_model
from mmfw.testing import KINDS, installed_registries
from mmfw.testing.checks.image_strategies import random_image
from mmfw.testing.checks.vlm import model_config

COMPONENTS = [(kind, name) for kind in KINDS for name in getattr(installed_registries(), kind).names()]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: ":".join(c))
def test_hf_export_generates_mmfw_tokens(component, under_test, registries, tmp_path) -> None:
    model_cfg = model_config(under_test(*component))
    cfg = load_config_dict({"model": model_cfg.model_dump(mode="json"), "data": {"system_prompt": "Be brief."},
                            "training": {"max_steps": 1}}, registries)
    torch.manual_seed(0)
    vlm, tok = build_model(cfg.model, registries)
    with torch.no_grad():
        for p in vlm.image_strategy.parameters():
            p.normal_()
    vlm.eval()
    save_hf(vlm, tok, cfg, tmp_path)
    image, prompt = random_image((45, 30)), "What is it?"
    pipe = VLMPipeline(vlm, tok, cfg)
    batch = pipe.collator([pipe.prepare([image], prompt)])
    ours = vlm.generate(**batch.model_inputs(), max_new_tokens=5, do_sample=False)

    hf = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                        {"type": "text", "text": prompt}]}])
    inputs = processor(images=image, text=text)
    assert torch.equal(inputs["input_ids"], batch.input_ids)
    loaded = dict(hf.vlm.named_buffers())  # buffers outside the state dict too (rotary tables...): recomputed
    for name, buffer in vlm.named_buffers():
        assert torch.equal(loaded[name], buffer), f"buffer {name} differs after from_pretrained"
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=5, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    assert theirs.tolist() == ours.tolist()
