"""Every composition exports with ``--format hf``: transformers' Auto classes load it and ``generate`` gives
mmfw's own greedy tokens (one model per combination of :func:`contract_utils.vlm_combos`)."""

from __future__ import annotations

import pytest
import torch
from contract_utils import KIND_FIXTURES  # noqa: F401  (the contract conftest parametrises vlm_combo)
from test_vlm import IMAGE_SIZE, model_config, random_image
from transformers import AutoModelForImageTextToText, AutoProcessor

import mmfw.hf  # noqa: F401  (registers model_type "mmfw" with the Auto classes)
from mmfw.config import load_config_dict
from mmfw.export.hf_native import save_hf
from mmfw.inference import VLMPipeline
from mmfw.model.builder import build_model


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hf_export_generates_mmfw_tokens(registries, vlm_combo, tokenizer_dir, tmp_path) -> None:
    model_cfg = model_config(registries, vlm_combo, tokenizer_dir)
    cfg = load_config_dict({"model": model_cfg.model_dump(mode="json"), "data": {"system_prompt": "Be brief."},
                            "training": {"max_steps": 1}}, registries)
    torch.manual_seed(0)
    vlm, tok = build_model(cfg.model, registries)
    with torch.no_grad():
        for p in vlm.image_strategy.parameters():
            p.normal_()
    vlm.eval()
    save_hf(vlm, tok, cfg, tmp_path)
    image, prompt = random_image(IMAGE_SIZE), "What is it?"
    pipe = VLMPipeline(vlm, tok, cfg)
    batch = pipe.collator([pipe.prepare([image], prompt)])
    ours = vlm.generate(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_sizes",
                                                  "num_tiles")}, max_new_tokens=5, do_sample=False)

    hf = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                        {"type": "text", "text": prompt}]}])
    inputs = processor(images=image, text=text)
    assert torch.equal(inputs["input_ids"], batch["input_ids"])
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=5, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    assert theirs.tolist() == ours.tolist()
