"""``mmfw export --format hf|auto``: any composition (the quickstart's patch merger included) loads through
transformers' Auto classes and answers as ``mmfw generate`` does; ``auto`` picks the native Llava classes when the
components map onto them; a non-empty target is refused unless ``--overwrite``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import mmfw.hf  # noqa: F401  (registers model_type "mmfw" with the Auto classes)
from mmfw.cli.main import main
from mmfw.export.hf_native import export
from mmfw.inference import load_pipeline
from tests.export.test_hf_llava_export import make_run

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = {  # configs/quickstart.yaml's composition, smaller
    "vision_encoder": {"type": "clip", "feature_layer": -1, "architecture": {
        "image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "projection_dim": 32}},
    "connector": {"type": "patch-merger", "merge_size": 2},
}
PROMPTS = ("What color is the shape?", "How many shapes are there?", "What shape is it?")


def _images(synth_data, n: int = 4) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(Path(synth_data.images).glob("*.png"))[:n]]


@pytest.fixture
def quickstart_run(tmp_path, registries, tokenizer_dir) -> Path:
    return make_run(tmp_path, registries, tokenizer_dir, {"type": "resize"}, **QUICKSTART)


def _hf_answers(out: Path, images: list[Image.Image], prompts, max_new_tokens: int = 6) -> list[list[int]]:
    hf = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    answers = []
    for image in images:
        for prompt in prompts:
            text = processor.apply_chat_template([{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": prompt}]}])
            inputs = processor(images=image, text=text)
            with torch.no_grad():
                new = hf.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            answers.append(new[0, inputs["input_ids"].shape[1]:].tolist())
    return answers


def _mmfw_answers(run: Path, registries, images, prompts, max_new_tokens: int = 6) -> list[list[int]]:
    pipe = load_pipeline(run, registries)
    out = []
    for image in images:
        for prompt in prompts:
            batch = pipe.collator([pipe.prepare([image], prompt)])
            out.append(pipe.model.generate(**batch.model_inputs(), max_new_tokens=max_new_tokens, do_sample=False)[0].tolist())
    return out


def test_quickstart_composition_exports_as_hf(quickstart_run, tmp_path, registries, synth_data) -> None:
    out = tmp_path / "hf"
    assert main(["-q", "export", str(quickstart_run), str(out), "--format", "auto"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mmfw" and config["mmfw_model"]["connector"]["type"] == "patch-merger"
    assert config["architectures"] == ["MMFWForConditionalGeneration"]
    assert config["system_prompt"] == "Answer briefly."
    assert (out / "model.safetensors").exists() and (out / "chat_template.jinja").exists()
    hf = AutoModelForImageTextToText.from_pretrained(out)
    assert type(hf).__name__ == "MMFWForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(out)).__name__ == "MMFWProcessor"

    images = _images(synth_data)
    theirs = _hf_answers(out, images, PROMPTS)
    assert theirs == _mmfw_answers(quickstart_run, registries, images, PROMPTS)
    assert len({tuple(a) for a in theirs}) > 1  # the answers depend on the image and prompt


def test_batched_processor_matches_single_prompts(quickstart_run, tmp_path, synth_data) -> None:
    out, _ = export(quickstart_run, tmp_path / "hf", "hf")
    hf = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    images = _images(synth_data, 2)
    texts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                          {"type": "text", "text": p}]}])
             for p in PROMPTS[:2]]
    batch = processor(images=images, text=texts)  # left-padded
    with torch.no_grad():
        logits = hf(**batch).logits[:, -1]
        for row, (image, text) in enumerate(zip(images, texts, strict=True)):
            single = hf(**processor(images=image, text=text)).logits[:, -1]
            torch.testing.assert_close(logits[row:row + 1], single, atol=1e-4, rtol=1e-4)


def test_tied_embeddings_survive_the_round_trip(monkeypatch, tmp_path, registries, tokenizer_dir, synth_data) -> None:
    from tests.export import test_hf_llava_export as llava

    tied = {**llava.MODEL["llm"], "architecture": {**llava.MODEL["llm"]["architecture"], "tie_word_embeddings": True}}
    monkeypatch.setattr(llava, "MODEL", {**llava.MODEL, "llm": tied})
    run = make_run(tmp_path, registries, tokenizer_dir, {"type": "resize"}, **QUICKSTART)
    out, fmt = export(run, tmp_path / "hf", "hf", registries=registries)
    hf = AutoModelForImageTextToText.from_pretrained(out)
    lm = hf.language_model
    assert lm.get_output_embeddings().weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    images = _images(synth_data, 2)
    assert _hf_answers(out, images, PROMPTS[:1]) == _mmfw_answers(run, registries, images, PROMPTS[:1])


def test_auto_picks_native_llava_next_for_anyres_clip_mlp(tmp_path, registries, tokenizer_dir) -> None:
    run = make_run(tmp_path, registries, tokenizer_dir,
                   {"type": "anyres", "grid_pinpoints": [[56, 112], [112, 56], [112, 112]]})
    out = tmp_path / "hf"
    assert main(["-q", "export", str(run), str(out)]) == 0  # --format auto is the default
    assert type(AutoModelForImageTextToText.from_pretrained(out)).__name__ == "LlavaNextForConditionalGeneration"
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava_next"


def test_auto_falls_back_to_hf_for_a_connector_without_llava_mapping(tmp_path, registries, tokenizer_dir) -> None:
    run = make_run(tmp_path, registries, tokenizer_dir, {"type": "resize"},
                   connector={"type": "resampler", "num_queries": 4})
    assert export(run, tmp_path / "hf", "auto", registries=registries)[1] == "hf"


def test_non_empty_target_is_refused_unless_overwrite(quickstart_run, tmp_path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["export", str(quickstart_run), str(out), "--format", "hf"]) == 2
    assert f"{out}: directory is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["-q", "export", str(quickstart_run), str(out), "--format", "hf", "--overwrite"]) == 0
    assert (out / "config.json").exists() and not (out / "notes.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "export", str(quickstart_run), str(empty), "--format", "hf"]) == 0


def test_trust_remote_code_loads_without_importing_mmfw(quickstart_run, tmp_path) -> None:
    out, _ = export(quickstart_run, tmp_path / "hf", "hf")
    probe = ("import sys\nfrom transformers import AutoModelForImageTextToText, AutoProcessor\n"
             f"m = AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
             f"p = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
             "print(type(m).__name__, type(p).__name__)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MMFWForConditionalGeneration", "MMFWProcessor"]


def test_dtype_asked_of_from_pretrained_is_honoured(quickstart_run, tmp_path, synth_data) -> None:
    out, _ = export(quickstart_run, tmp_path / "hf", "hf")
    hf = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in hf.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in AutoModelForImageTextToText.from_pretrained(out).parameters()} == {torch.float32}
    processor = AutoProcessor.from_pretrained(out)
    text = processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat color is the shape?"}])
    with torch.no_grad():
        new = hf.generate(**processor(images=_images(synth_data, 1), text=text), max_new_tokens=3, do_sample=False)
    assert new.shape[0] == 1
