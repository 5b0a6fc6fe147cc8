"""The YAML examples of the seed-model options in ``docs/`` (image start/end tokens, new-token-row training,
augmentation, modality-grouped batches) load as written, merged into ``configs/omnilmm-tiny.yaml``."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from mmfw.config import load_config_dict

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "omnilmm-tiny.yaml"
OPTIONS = {
    "image_start_token": lambda cfg: cfg.model.fusion.image_markers == ("<im_start>", "<im_end>"),
    "new_token_embeddings": lambda cfg: cfg.training.policy.new_token_embeddings,
    "augment:": lambda cfg: cfg.data.augment is not None,
    "group_by_modality": lambda cfg: cfg.training.group_by_modality,
}


def _examples() -> list[tuple[str, str, str]]:
    out = []
    for page in ("configs.md", "data.md", "training.md"):
        text = (DOCS / page).read_text()
        for block in re.findall(r"^( *)```yaml\n(.*?)^\1```", text, flags=re.S | re.M):
            body = textwrap.dedent(block[1])
            for key in OPTIONS:
                if key in body:
                    out.append((page, key, body))
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def test_every_option_has_an_example() -> None:
    assert {key for _, key, _ in _examples()} == set(OPTIONS)


@pytest.mark.parametrize("page, key, body", _examples(), ids=lambda x: x if len(str(x)) < 30 else "yaml")
def test_example_loads(page, key, body, tmp_path, registries) -> None:
    exp = yaml.safe_load(CONFIG.read_text().replace("data/synth-tiny", str(tmp_path / "data")))
    exp["model"]["fusion"] = {}
    exp["data"].pop("augment")
    exp["training"]["policy"] = {"vision_encoder": "frozen", "llm": "frozen"}
    exp.pop("stages")
    exp["training"]["max_steps"] = 1
    cfg = load_config_dict(_merge(exp, yaml.safe_load(body)), registries)
    assert OPTIONS[key](cfg)
