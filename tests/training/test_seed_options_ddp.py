"""The seed-model options under DDP (``mmfw train --num-processes 2``, gloo on CPU): modality-grouped batches on
mixed data with gradient accumulation, image start/end tokens and new-token-row training. The original embedding
rows stay bit-identical (the masked gradients are all-reduced zeros), the new rows learn."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

from mmfw.config import load_config_dict
from mmfw.model.builder import build_model
from tests.training.conftest import run_mmfw, write_config

pytestmark = pytest.mark.slow


def test_two_processes_with_markers_new_rows_and_modality_groups(experiment, synth_data, registries,
                                                                 tmp_path) -> None:
    records = json.loads(open(synth_data.train).read())[:48]
    for r in records[::3]:  # a third of the samples text-only
        del r["image"]
        for turn in r["conversations"]:
            turn["value"] = turn["value"].replace("<image>\n", "").replace("<image>", "")
    (tmp_path / "mixed.json").write_text(json.dumps(records))
    exp = copy.deepcopy(experiment)
    exp["model"]["fusion"] = {"image_start_token": "<im_start>", "image_end_token": "<im_end>"}
    exp["data"]["train"] = [{"path": str(tmp_path / "mixed.json"), "image_root": str(synth_data.images.parent)}]
    exp["data"]["eval"] = []
    exp["training"].update(batch_size=4, gradient_accumulation_steps=2, max_steps=3, weight_decay=0.1,
                           group_by_modality=True,
                           policy={"vision_encoder": "frozen", "llm": "frozen", "new_token_embeddings": True})
    proc = run_mmfw(["train", str(write_config(exp, tmp_path / "exp.yaml")), "--num-processes", "2",
                     "--no-progress"])
    assert "batch 4 x accumulation 2 x 2 process(es)" in proc.stderr
    cfg = load_config_dict(exp, registries)
    set_seed(cfg.seed)
    init, tok = build_model(cfg.model, registries)
    before = init.state_dict()
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    rows = torch.zeros(len(tok), dtype=torch.bool)
    rows[list(init.added_token_ids)] = True
    for name in ("llm.model.model.embed_tokens.weight", "llm.model.lm_head.weight"):
        assert torch.equal(after[name][~rows], before[name][~rows])
        assert not torch.equal(after[name][rows], before[name][rows])
    connector = [k for k in after if k.startswith("connector.")]
    assert connector and any(not torch.equal(after[k], before[k]) for k in connector)  # the connector trained
