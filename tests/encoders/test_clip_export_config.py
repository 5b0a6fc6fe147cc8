"""``export_config()`` of a CLIP tower loaded from a checkpoint: its architecture, so an ``hf`` export rebuilds it
without the checkpoint; a checkpoint whose config the architecture fields cannot express keeps its source."""

from __future__ import annotations

import torch


def test_pretrained_clip_exports_its_architecture(tmp_path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mmfw.encoders.clip import CLIPEncoderConfig, CLIPVisionEncoder

    torch.manual_seed(0)
    arch = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
            "num_attention_heads": 2, "projection_dim": 16}
    CLIPVisionModel(CLIPVisionConfig(**arch)).save_pretrained(tmp_path / "clip")
    loaded = CLIPVisionEncoder(CLIPEncoderConfig(pretrained=str(tmp_path / "clip"), feature_layer=-2))
    exported = loaded.export_config()
    assert exported.pretrained is None and exported.architecture.model_dump(exclude={"initializer_factor"}) == arch
    rebuilt = CLIPVisionEncoder(CLIPEncoderConfig.model_validate(exported.model_dump(mode="json")))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in loaded.state_dict().items()}
    assert rebuilt.spec == loaded.spec

    odd = CLIPVisionConfig(**arch, hidden_act="gelu")  # a field CLIPArchitecture cannot express: keep the source
    CLIPVisionModel(odd).save_pretrained(tmp_path / "odd")
    keeps = CLIPVisionEncoder(CLIPEncoderConfig(pretrained=str(tmp_path / "odd"))).export_config()
    assert keeps.pretrained == str(tmp_path / "odd")
