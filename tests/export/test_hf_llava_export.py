"""``mmfw export``: transformers loads the output with its own Auto classes and reproduces mmfw's inputs and logits."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.export import ExportError, build_hf_llava, export_hf_llava
from mmfw.inference import VLMPipeline
from mmfw.model.builder import build_model
from mmfw.model.io import load_model_dir, save_model_dir

SYSTEM = "Answer briefly."
QUESTION = "What is in the picture?"
MODEL: dict[str, Any] = {
    "vision_encoder": {"type": "clip", "architecture": {
        "image_size": 56, "patch_size": 14, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 4, "projection_dim": 32}},
    "connector": {"type": "mlp", "depth": 2, "activation": "gelu_tanh"},
    "llm": {"type": "llama", "architecture": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024}},
}
CASES = {  # strategy -> (expected format, transformers model class, LLM)
    "pad": ({"type": "pad"}, "hf-llava", "LlavaForConditionalGeneration", "llama"),
    "resize": ({"type": "resize"}, "hf-llava", "LlavaForConditionalGeneration", "llama"),
    "anyres": ({"type": "anyres", "grid_pinpoints": [[56, 112], [112, 56], [112, 112], [168, 56]]}, "hf-llava-next",
               "LlavaNextForConditionalGeneration", "mistral"),
}


def make_run(tmp_path: Path, registries, tokenizer_dir: Path, strategy: dict, llm: str = "llama",
             **model_changes: Any) -> Path:
    """A run directory holding a random-init tiny model (as training would leave it)."""
    if llm not in registries.llms:
        pytest.skip(f"LLM component {llm!r} is not registered (yet)")
    model = copy.deepcopy(MODEL) | {"image_strategy": strategy} | model_changes
    model["llm"] = model["llm"] | {"type": llm, "tokenizer": str(tokenizer_dir)}
    cfg = load_config_dict({"model": model, "data": {"system_prompt": SYSTEM}, "training": {"max_steps": 1}},
                           registries)
    torch.manual_seed(0)
    vlm, tok = build_model(cfg.model, registries)
    with torch.no_grad():
        for p in vlm.image_strategy.parameters():
            p.normal_()
    return save_model_dir(vlm, tok, cfg, tmp_path / "run" / "model").parent


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())  # 451 x 300: not square, so padding and unpadding matter


@pytest.mark.parametrize("case", CASES)
def test_transformers_reproduces_mmfw(case, tmp_path, registries, tokenizer_dir, cat) -> None:
    strategy, fmt, hf_class, llm = CASES[case]
    run = make_run(tmp_path, registries, tokenizer_dir, strategy, llm)
    out = tmp_path / "hf"
    if case == "pad":  # through the CLI once
        assert main(["export", str(run), str(out), "--format", fmt]) == 0
    else:
        assert export_hf_llava(run, out, registries=registries) == (out, fmt)

    # mmfw: the run's own inference data path
    vlm, tok, cfg = load_model_dir(run, registries)
    pipe = VLMPipeline(vlm, tok, cfg)
    batch = pipe.collator([pipe.prepare([cat], QUESTION)])
    inputs = batch.model_inputs()
    # transformers: its Auto classes and the processor saved with the model
    hf = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(hf).__name__ == hf_class
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"<image>\n{QUESTION}"}]
    with torch.no_grad():
        ours = vlm(**inputs).logits
        # the default processor (torchvision) has mmfw's default pixels (backend: torch); the PIL one differs slightly
        for backend, pixel_tol, logit_tol in (("pil", 0.02, 1e-2), (None, 1e-5, 1e-4)):
            processor = AutoProcessor.from_pretrained(out, **({"backend": backend} if backend else {}))
            text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            hf_inputs = processor(images=cat, text=text, return_tensors="pt")
            assert torch.equal(hf_inputs["input_ids"], batch.input_ids)
            pixels = hf_inputs["pixel_values"].flatten(0, -4)  # LlavaNext: (images, tiles, 3, H, W)
            torch.testing.assert_close(pixels, batch.pixel_values, atol=pixel_tol, rtol=0)
            theirs = hf(**hf_inputs).logits
            assert float((ours - theirs).abs().max()) <= logit_tol, backend
        new = hf.generate(**hf_inputs, max_new_tokens=4, do_sample=False)[0, hf_inputs["input_ids"].shape[1]:]
        ours_new = vlm.generate(**inputs, max_new_tokens=4, do_sample=False)[0]
    assert new.tolist() == ours_new.tolist()


def test_component_without_a_mapping_is_named(tmp_path, registries, tokenizer_dir) -> None:
    if "resampler" not in registries.connectors:
        pytest.skip("resampler connector not registered (yet)")
    run = make_run(tmp_path, registries, tokenizer_dir, {"type": "resize"},
                   connector={"type": "resampler", "num_queries": 4})
    with pytest.raises(ExportError, match=r"connector 'resampler' \(mmfw\.connectors\.resampler\.\w+\) has no "
                                          r"transformers Llava mapping"):
        export_hf_llava(run, tmp_path / "hf", registries=registries)


def test_settings_without_a_counterpart_are_errors(tmp_path, registries, tokenizer_dir, capsys) -> None:
    run = make_run(tmp_path, registries, tokenizer_dir, {"type": "anyres", "merge": "flat"},
                   connector={"type": "mlp", "depth": 3})
    vlm, tok, _ = load_model_dir(run, registries)
    with pytest.raises(ExportError) as err:
        build_hf_llava(vlm, tok)
    assert "connector 'mlp'" in str(err.value) and "depth 3" in str(err.value)
    assert "image strategy 'anyres'" in str(err.value) and "merge 'flat'" in str(err.value)
    assert main(["export", str(run), str(tmp_path / "hf"), "--format", "hf-llava-next"]) == 2  # one line
    assert "error: cannot export to transformers Llava" in capsys.readouterr().err
    assert main(["-q", "export", str(run), str(tmp_path / "any")]) == 0  # auto: mmfw's own transformers classes
    assert "as hf to" in capsys.readouterr().out


def test_format_must_fit_the_image_strategy(tmp_path, registries, tokenizer_dir) -> None:
    run = make_run(tmp_path, registries, tokenizer_dir, {"type": "anyres"})
    vlm, tok, _ = load_model_dir(run, registries)
    with pytest.raises(ExportError, match=r"format 'hf-llava' does not fit this model: its image_strategy exports "
                                          r"to \['hf-llava-next'\]"):
        build_hf_llava(vlm, tok, "hf-llava")
    assert build_hf_llava(vlm, tok).format == "hf-llava-next"
