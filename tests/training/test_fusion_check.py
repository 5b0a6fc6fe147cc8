"""The fusion checks every sample's image placeholders against that sample's own images in a real training batch:
an image strategy that miscounts one image's tokens up and another's down keeps the batch totals equal, so only the
per-sample check (``image_counts`` reaches the model through :meth:`VLMBatch.model_inputs`) can catch it. The run
stops with one line naming the record, exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmfw.data.batch import VLMBatch
from mmfw.data.collator import VLMCollator
from mmfw.image_strategies.resize import ResizeStrategy
from tests.cli.catalogue_utils import assert_fails, cli, write_config


@pytest.fixture
def miscounting_strategy(monkeypatch) -> None:
    """``resize`` claims one token more for landscape images and one fewer for portrait ones (the model still
    produces the same rows for both): a width/height mix-up of the kind a plugin strategy can have."""
    real = ResizeStrategy.num_tokens

    def num_tokens(self: ResizeStrategy, size: tuple[int, int]) -> int:
        n = real(self, size)
        return n + 1 if size[0] > size[1] else n - 1 if size[0] < size[1] else n

    monkeypatch.setattr(ResizeStrategy, "num_tokens", num_tokens)


def _data(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (48, 32), "red").save(images / "wide.png")
    Image.new("RGB", (32, 48), "blue").save(images / "tall.png")
    records = [{"id": f"rec-{name}", "image": f"images/{name}.png",
                "conversations": [{"from": "human", "value": "<image>\nWhat color is it?"},
                                  {"from": "gpt", "value": color}]}
               for name, color in (("wide", "red"), ("tall", "blue"))]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def _experiment(tmp_path: Path, tiny_model: dict[str, Any]) -> dict[str, Any]:
    return {"name": "fusion", "seed": 0, "output_dir": str(tmp_path / "run"), "model": tiny_model,
            "data": {"train": [{"path": str(_data(tmp_path))}], "max_length": 96},
            "training": {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "log_every": 1, "trackers": []}}


def test_the_batch_totals_agree_so_only_the_per_sample_check_can_catch_it(tmp_path, tiny_model, registries,
                                                                          miscounting_strategy) -> None:
    from mmfw.config import load_config_dict
    from mmfw.data.dataset import build_dataset
    from mmfw.model.builder import build_model

    cfg = load_config_dict(_experiment(tmp_path, tiny_model), registries)
    vlm, tok = build_model(cfg.model, registries)
    ds = build_dataset(cfg.data.train, cfg.data, tok, vlm.image_strategy, image_token="<image>", name="data.train")
    batch = VLMCollator(tok.pad_token_id)([ds[0], ds[1]])
    assert isinstance(batch, VLMBatch) and batch.image_counts.tolist() == [1, 1]
    placeholders = (batch.input_ids == vlm.image_token_id).sum(dim=1).tolist()
    rows = [f.shape[0] for f in vlm.encode_images_split(batch.pixel_values, batch.image_sizes, batch.num_tiles)]
    assert sum(placeholders) == sum(rows) and placeholders != rows  # the totals agree, the samples do not
    assert "image_counts" in batch.model_inputs()


def test_a_per_sample_disagreement_stops_training_naming_the_record(tmp_path, tiny_model,
                                                                    miscounting_strategy) -> None:
    res = cli(["train", write_config(tmp_path / "exp.yaml", _experiment(tmp_path, tiny_model)), "--no-progress"])
    assert_fails(res, "disagree per sample", "placeholder tokens", "is record 'rec-")
    assert len([line for line in res.err.splitlines() if line.startswith("error:")]) == 1, res.err
