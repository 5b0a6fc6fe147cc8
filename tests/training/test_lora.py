"""LoRA: adapters saved in peft's format reload with ``PeftModel.from_pretrained``; merging (``mmfw merge`` and the
automatic merge of ``load_model_dir``) gives the logits of the unmerged model."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.config.experiment import DatasetSpec
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.model.builder import build_model, load_weights
from mmfw.model.io import load_model_dir
from mmfw.training.lora import lora_components
from mmfw.training.trainer import Trainer
from tests.training.conftest import tiny_experiment_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_run(tokenizer_dir, synth_data, small_train, tmp_path_factory, registries):
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    exp = tiny_experiment_dict(tokenizer_dir, synth_data, small_train, run_dir)
    exp["data"]["eval"] = []
    exp["training"].update(max_steps=6, learning_rate=2e-2, policy={
        "vision_encoder": "frozen", "connector": "full",
        "llm": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]}})
    trainer = Trainer(load_config_dict(exp, registries), registries, progress=False)
    trainer.train()
    return trainer, run_dir


def _batch(model, tokenizer, synth_data):
    ds = LlavaDataset([DatasetSpec(path=str(synth_data.eval))], tokenizer, model.image_strategy, image_token="<image>",
                      max_length=96)
    batch = VLMCollator(tokenizer.pad_token_id)([ds[i] for i in range(4)])
    return batch.model_inputs()


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model.eval()(**batch).logits


def test_run_directory_holds_peft_adapters_and_plain_base_weights(lora_run, registries) -> None:
    trainer, run_dir = lora_run
    model_dir = run_dir / "model"
    config = json.loads((model_dir / "adapters/llm/adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    base = load_file(str(model_dir / "model.safetensors"))
    plain, _ = build_model(trainer.cfg.model, registries, tokenizer=trainer.tokenizer)
    assert set(base) == set(plain.state_dict())  # same names as a model trained without LoRA
    adapters = load_file(str(model_dir / "adapters/llm/adapter_model.safetensors"))
    assert adapters and all(("lora_A" in k or "lora_B" in k) for k in adapters)
    assert all(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_peft_reload_and_merge_give_the_unmerged_logits(lora_run, registries, synth_data, tmp_path) -> None:
    trainer, run_dir = lora_run
    live = trainer.accelerator.unwrap_model(trainer.model)
    assert set(lora_components(live)) == {"llm"}
    batch = _batch(live, trainer.tokenizer, synth_data)
    reference = _logits(live, batch)

    # 1. peft's own loader on the base weights
    vlm, _ = build_model(trainer.cfg.model, registries, tokenizer=trainer.tokenizer)
    load_weights(vlm, run_dir / "model")
    vlm.llm.model = PeftModel.from_pretrained(vlm.llm.model, str(run_dir / "model/adapters/llm"))
    assert isinstance(vlm.llm.model, PeftModel)
    torch.testing.assert_close(_logits(vlm, batch), reference, atol=1e-5, rtol=1e-5)

    # 2. load_model_dir merges automatically
    merged, _, _ = load_model_dir(run_dir, registries)
    assert not lora_components(merged)
    torch.testing.assert_close(_logits(merged, batch), reference, atol=1e-5, rtol=1e-5)

    # 3. mmfw merge writes a plain model directory
    out = tmp_path / "merged"
    assert main(["-q", "merge", str(run_dir), str(out)]) == 0
    assert (out / "model.safetensors").exists() and not (out / "adapters").exists()
    exported, _, _ = load_model_dir(out, registries)
    torch.testing.assert_close(_logits(exported, batch), reference, atol=1e-5, rtol=1e-5)
    # the merge changed the weights the adapters touched, and only those (and nothing of the base is lost)
    before, after = load_file(str(run_dir / "model/model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight", "down_proj.weight")) for k in changed)


def test_merge_refuses_to_overwrite(lora_run, tmp_path, capsys) -> None:
    _, run_dir = lora_run
    (tmp_path / "exists").mkdir()
    assert main(["merge", str(run_dir), str(tmp_path / "exists")]) == 2
    assert "already exists" in capsys.readouterr().err


PEFT_PROBE = """
import json, sys
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM
adapter, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
config = json.load(open(adapter + "/adapter_config.json"))
base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
with torch.no_grad():
    a = PeftModel.from_pretrained(base, adapter).eval()(input_ids=ids).logits
    b = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()(input_ids=ids).logits
torch.save({"peft": a, "auto": b}, sys.argv[3])
print(json.dumps(sorted(m for m in sys.modules if m == "mmfw" or m.startswith("mmfw."))))
"""


@pytest.fixture(scope="module")
def lora_modules_run(tokenizer_dir, synth_data, small_train, tmp_path_factory, registries):
    """LoRA on the LLM with its head, final norm and embeddings trained fully (configs/quickstart-2stage.yaml)."""
    run_dir = tmp_path_factory.mktemp("lora-modules") / "run"
    exp = tiny_experiment_dict(tokenizer_dir, synth_data, small_train, run_dir)
    exp["data"]["eval"] = []
    exp["training"].update(max_steps=4, learning_rate=2e-2, save_every=2, policy={
        "vision_encoder": "frozen", "connector": "full",
        "llm": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "modules": {"llm.model.lm_head": "full", "llm.model.model.norm": "full",
                    "llm.model.model.embed_tokens": "full"}})
    trainer = Trainer(load_config_dict(exp, registries), registries, progress=False)
    trainer.train()
    return trainer, run_dir


def test_adapters_load_with_peft_and_transformers_alone(lora_modules_run, tmp_path) -> None:
    import os
    import subprocess
    import sys

    trainer, run_dir = lora_modules_run
    adapter = run_dir / "model" / "adapters" / "llm"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["lm_head", "model.embed_tokens", "model.norm"]
    assert config["base_model_name_or_path"] == str((adapter / "base").resolve())
    assert (adapter / "base" / "config.json").exists() and (adapter / "base" / "model.safetensors").exists()
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert {"base_model.model.lm_head.weight", "base_model.model.model.norm.weight",
            "base_model.model.model.embed_tokens.weight"} <= set(saved)
    assert not list(run_dir.rglob("README.md"))  # no template model cards anywhere in the run
    for checkpoint in (run_dir / "checkpoints").iterdir():  # renamed into place: the path follows
        cfg = json.loads((checkpoint / "adapters/llm/adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == str((checkpoint / "adapters/llm/base").resolve())

    live = trainer.accelerator.unwrap_model(trainer.model).eval()
    ids = trainer.tokenizer("a red circle and a blue square", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = live.llm(input_ids=ids).logits
    out = tmp_path / "logits.pt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PEFT_PROBE, str(adapter), json.dumps(ids.tolist()), str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []  # mmfw was never imported
    logits = torch.load(out)
    torch.testing.assert_close(logits["peft"], reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits["auto"], reference, atol=1e-5, rtol=1e-5)

    merged, _, _ = load_model_dir(run_dir, registries=None)  # mmfw's own loader still folds everything in
    with torch.no_grad():
        torch.testing.assert_close(merged.llm(input_ids=ids).logits, reference, atol=1e-5, rtol=1e-5)


def test_a_lora_run_exports_as_hf(lora_modules_run, tmp_path, synth_data) -> None:
    from transformers import AutoModelForImageTextToText

    import mmfw.hf  # noqa: F401

    trainer, run_dir = lora_modules_run
    assert main(["-q", "export", str(run_dir), str(tmp_path / "hf"), "--format", "hf"]) == 0
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf").eval()
    live = trainer.accelerator.unwrap_model(trainer.model).eval()
    batch = _batch(live, trainer.tokenizer, synth_data)
    with torch.no_grad():
        torch.testing.assert_close(hf(**batch).logits, live(**batch).logits, atol=1e-5, rtol=1e-5)
